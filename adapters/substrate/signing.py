"""An sr25519 signer's answer, bounded and checked: :func:`adapters.signing.call_signer` plus the
sr25519 checks. ``adapters.substrate.client`` asks for it between two substrate-interface calls,
outside their single worker slot, so a hanging sr25519 signer holds the signing module's
threads, never the slot every other Substrate call of the process needs."""

from __future__ import annotations

from collections.abc import Callable

import sr25519

from adapters.signing import SignerError, call_signer

__all__ = ["SR25519_SIGNATURE_BYTES", "sign_sr25519"]

SR25519_SIGNATURE_BYTES = 64


class _Sr25519Key:
    """An sr25519 key as :func:`call_signer` sees it: the public key is the ``address`` it
    names in an error line and in a stuck call (the SS58 form would need the chain's prefix)."""

    __slots__ = ("address",)

    def __init__(self, public_key: bytes) -> None:
        self.address = public_key


class _InProcessSr25519Key(_Sr25519Key):
    """The same, for a key whose secret is in this process (no I/O, cannot hang)."""

    __slots__ = ()

    signs_in_process = True


async def sign_sr25519(
    public_key: bytes,
    sign: Callable[[bytes], object],
    payload: bytes,
    *,
    in_process: bool,
    timeout: float | None = None,
) -> bytes:
    """``sign(payload)``'s answer, checked: the 64-byte sr25519 signature of exactly
    ``payload`` under ``public_key``, or :class:`SignerError` (one line).

    Bounded and counted like every :func:`call_signer` call (a worker thread of the signing
    module's own, :data:`SIGN_TIMEOUT`), unless ``in_process`` (the keypair holds its secret here:
    about 0.1 ms of CPU, called inline). The answer is verified before it is returned, so a
    signer that answers with another key's signature, a signature of another payload, or 64
    bytes of noise is caught here, not by the chain after a round trip (and not after a
    nonce was spent on it): the check costs about 0.2 ms, once per extrinsic.
    """

    def checked() -> bytes:
        answer = sign(payload)
        # bytes() of an int or a str is no signature: refuse the type, not just the content.
        signature = bytes(answer) if isinstance(answer, bytes | bytearray) else b""
        if len(signature) != SR25519_SIGNATURE_BYTES:
            shown = f"{len(signature)} bytes" if signature else type(answer).__name__
            raise SignerError(
                f"sr25519 signer 0x{public_key.hex()} answered {shown}, not a 64-byte signature"
            )
        try:
            valid = bool(sr25519.verify(signature, payload, public_key))
        except ValueError:  # a malformed public key or signature point
            valid = False
        if not valid:
            raise SignerError(
                f"sr25519 signer 0x{public_key.hex()} returned a signature that does not verify "
                "under its own key for the payload it was given"
            )
        return signature

    key = _InProcessSr25519Key(public_key) if in_process else _Sr25519Key(public_key)
    return await call_signer(key, checked, timeout=timeout)
