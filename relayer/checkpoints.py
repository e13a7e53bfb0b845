"""Where attesters publish signed checkpoints and relayers collect them.

A directory tree shared by the processes (a local disk on a devnet; any shared or synced
filesystem in production — the same shape as Hyperlane's checkpoint syncers)::

    <store>/<origin>/<outbox>/<index, 10 digits>/<signer>.json    one signature
    <store>/<origin>/<outbox>/latest/<signer>.json                 that signer's newest one

Files are written to a temporary name and renamed, so a reader never sees half a file. Nothing
read from the store is trusted: the relayer verifies every signature against the configured
committee (``light_clients.committee.verify_attestation``) and the root against its own copy of
the outbox tree before using a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from light_clients.committee import Checkpoint, recover_signer
from light_clients.errors import VerificationError


class CheckpointStoreError(Exception):
    """The store cannot be written, or an attester would contradict itself."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """One attester's signature over a checkpoint, and the block whose state it attests."""

    checkpoint: Checkpoint
    signer: bytes
    signature: bytes
    block_number: int
    block_hash: bytes

    def to_json(self) -> str:
        """The file contents."""
        cp = self.checkpoint
        return json.dumps(
            {
                "checkpoint": checkpoint_to_json(cp),
                "signer": "0x" + self.signer.hex(),
                "signature": "0x" + self.signature.hex(),
                "block_number": self.block_number,
                "block_hash": "0x" + self.block_hash.hex(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SignedCheckpoint:
        """Parse a file; ValueError/KeyError/TypeError on anything malformed."""
        obj = json.loads(text)
        return cls(
            checkpoint=checkpoint_from_json(obj["checkpoint"]),
            signer=parse_hex(obj["signer"]),
            signature=parse_hex(obj["signature"]),
            block_number=int(obj["block_number"]),
            block_hash=parse_hex(obj["block_hash"]),
        )


def parse_hex(value: object) -> bytes:
    """``0x``-hex text as bytes; ValueError otherwise."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x-hex: {value!r}")
    return bytes.fromhex(value[2:])


def checkpoint_to_json(cp: Checkpoint) -> dict[str, object]:
    """A checkpoint as the store's files (and proposals) write it."""
    return {
        "origin": cp.origin,
        "outbox": "0x" + cp.outbox.hex(),
        "root": "0x" + cp.root.hex(),
        "index": cp.index,
    }


def checkpoint_from_json(obj: Any) -> Checkpoint:
    """The inverse of :func:`checkpoint_to_json`; ValueError/KeyError/TypeError, or the light
    client's VerificationError for a checkpoint that cannot exist (zero root, …)."""
    return Checkpoint(
        origin=int(obj["origin"]),
        outbox=parse_hex(obj["outbox"]),
        root=parse_hex(obj["root"]),
        index=int(obj["index"]),
    )


class CheckpointStore:
    """A directory of signed checkpoints."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _lane(self, origin: int, outbox: bytes) -> Path:
        return self.root / str(origin) / ("0x" + outbox.hex())

    def publish(self, signed: SignedCheckpoint) -> None:
        """Write one signature, refusing to sign two roots at the same index (equivocation)."""
        cp = signed.checkpoint
        lane = self._lane(cp.origin, cp.outbox)
        path = lane / f"{cp.index:010d}" / f"0x{signed.signer.hex()}.json"
        previous = self._read_own(path, signed.signer)  # a forged file is overwritten
        if previous is not None:
            if previous.checkpoint.root != cp.root:
                raise CheckpointStoreError(
                    f"refusing to sign a second root at index {cp.index} of origin {cp.origin}: "
                    f"already signed 0x{previous.checkpoint.root.hex()} (reorg below finality?)"
                )
            return
        atomic_write(path, signed.to_json())
        atomic_write(lane / "latest" / f"0x{signed.signer.hex()}.json", signed.to_json())

    def latest_indices(self, origin: int, outbox: bytes) -> list[int]:
        """The newest index each signer has published, highest first."""
        latest = self._lane(origin, outbox) / "latest"
        found = (self._read(p) for p in json_files(latest))
        return sorted({s.checkpoint.index for s in found if s is not None}, reverse=True)

    def signatures(self, origin: int, outbox: bytes, index: int) -> list[SignedCheckpoint]:
        """Every readable signature published for ``index`` (unverified)."""
        folder = self._lane(origin, outbox) / f"{index:010d}"
        return [s for s in (self._read(p) for p in json_files(folder)) if s is not None]

    def latest_own(self, origin: int, outbox: bytes, signer: bytes) -> SignedCheckpoint | None:
        """The newest checkpoint ``signer`` published (an attester resumes from it), only if its
        signature is ``signer``'s: others can write to the store too."""
        return self._read_own(
            self._lane(origin, outbox) / "latest" / f"0x{signer.hex()}.json", signer
        )

    def signed_by(self, checkpoint: Checkpoint, signer: bytes) -> bool:
        """Did ``signer`` sign exactly ``checkpoint``? Its file must hold a signature that
        recovers to ``signer`` (a file name or field proves nothing: the store is shared)."""
        path = (
            self._lane(checkpoint.origin, checkpoint.outbox)
            / f"{checkpoint.index:010d}"
            / f"0x{signer.hex()}.json"
        )
        own = self._read_own(path, signer)
        return own is not None and own.checkpoint == checkpoint

    def _read_own(self, path: Path, signer: bytes) -> SignedCheckpoint | None:
        signed = self._read(path)
        if signed is None or signed.signer != signer:
            return None
        try:
            if recover_signer(signed.checkpoint.digest(), signed.signature) != signer:
                return None
        except VerificationError:
            return None
        return signed

    @staticmethod
    def _read(path: Path) -> SignedCheckpoint | None:
        try:
            return SignedCheckpoint.from_json(path.read_text())
        except Exception:  # anyone may write here: nothing read may stop a reader
            # Missing, corrupt or foreign files are skipped: signatures are verified anyway.
            return None


def json_files(folder: Path) -> Iterable[Path]:
    """The ``.json`` files of ``folder``, sorted; none if it does not exist."""
    try:
        # Not ``.tmp-*`` files: those are being written, and are renamed when complete.
        return sorted(
            p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")
        )
    except FileNotFoundError:
        return []


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file, fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise CheckpointStoreError(f"cannot write {path}: {exc.strerror}") from None
