"""Ethereum execution-layer verification: strict RLP, headers, Merkle-Patricia proofs, account
and storage proofs (``eth_getProof``) and receipt inclusion.

Modules: :mod:`.rlp`, :mod:`.header`, :mod:`.mpt`, :mod:`.state`, :mod:`.receipt`. Everything
here is pure (bytes in, verdict out); every rejection is a
:class:`~light_clients.errors.VerificationError`.
"""
