"""Substrate light client: strict SCALE, headers, storage proofs and GRANDPA finality.

- :mod:`.scale` — a strict SCALE reader (canonical compacts, bounded lengths, no trailing bytes).
- :mod:`.header` — block headers, their blake2-256 hash, GRANDPA consensus logs.
- :mod:`.trie` — storage-proof verification for the base-16 trie (layouts V0 and V1).
- :mod:`.grandpa` — justifications, authority sets and an authority-set change tracker.

Pure verification, like the rest of :mod:`light_clients`: bytes in, a frozen dataclass out,
or a :class:`~light_clients.errors.VerificationError` subclass naming the reason.
"""
