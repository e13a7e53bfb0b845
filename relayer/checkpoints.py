"""Where attesters publish signed checkpoints and relayers collect them.

A directory tree shared by the processes (a local disk on a devnet; any shared or synced
filesystem in production — the same shape as Hyperlane's checkpoint syncers)::

    <store>/<origin>/<outbox>/<index, 10 digits>/<signer>.json    one signature
    <store>/<origin>/<outbox>/latest/<signer>.json                 that signer's newest one

Files are written to a temporary name and renamed, so a reader never sees half a file. Nothing
read from the store is trusted: the relayer verifies every signature against the configured
committee (``light_clients.committee.verify_attestation``) and the root against its own copy of
the outbox tree before using a checkpoint.

A genuine signature is still no proof that a file is where it belongs: anyone who can write the
store (the relayer can) may copy an attester's file from index N to N+1, or from one lane to
another. Such a file would look like the attester contradicting itself — halting the attester
when it signs N+1, and the relayer when it counts "dissent" from a threshold of members. So
every reader checks that a file's content matches its path (origin, outbox, index folder and
signer file name); one that does not is ignored, with a warning naming it, and a publisher
overwrites it.

The block an attester signed from (``block_number``, ``block_hash``) is not covered by the
checkpoint signature, so it carries a second signature of its own (``block_signature``, over
:func:`attested_block_digest`): an attester that resumes trusts only a block it provably wrote
itself when it checks, before signing again, that this block is still canonical.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from light_clients.committee import (
    EIP191_PREFIX,
    Checkpoint,
    address_of,
    recover_signer,
    sign_checkpoint,
    sign_digest,
)
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256

log = logging.getLogger("passerelle.checkpoints")

MAX_FILE_BYTES = 1 << 16
"""A signature file is under 1 KiB; a larger one is none (and is not read to its end)."""

ATTESTED_BLOCK_TAG = b"PASSERELLE/v1/attested-block"
"""Domain tag of :func:`attested_block_digest`: never equal to a checkpoint's preimage."""


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
    block_signature: bytes = b""
    """The signer's signature over :func:`attested_block_digest` (empty in files written
    before it existed: their block is then unproven)."""

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
                "block_signature": "0x" + self.block_signature.hex(),
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
            block_signature=parse_hex(obj.get("block_signature", "0x")),
        )

    @classmethod
    def create(
        cls, key: bytes, checkpoint: Checkpoint, *, block_number: int, block_hash: bytes
    ) -> SignedCheckpoint:
        """``key``'s signature over ``checkpoint``, and over the block it was read at."""
        return cls(
            checkpoint=checkpoint,
            signer=address_of(key),
            signature=sign_checkpoint(key, checkpoint),
            block_number=block_number,
            block_hash=block_hash,
            block_signature=sign_digest(
                key, attested_block_digest(checkpoint, block_number, block_hash)
            ),
        )

    def block_is_signed(self) -> bool:
        """Did ``signer`` itself vouch for ``block_number``/``block_hash``? (The checkpoint
        signature does not cover them: without this, anyone could edit them.)"""
        digest = attested_block_digest(self.checkpoint, self.block_number, self.block_hash)
        try:
            return recover_signer(digest, self.block_signature) == self.signer
        except VerificationError:
            return False


def attested_block_digest(checkpoint: Checkpoint, block_number: int, block_hash: bytes) -> bytes:
    """What ``block_signature`` signs: EIP-191 over ``keccak256(tag ‖ checkpoint inner hash ‖
    u64 block number ‖ block hash)``. The tag differs from the checkpoint's, so this signature
    can never pass as a checkpoint signature (nor the reverse)."""
    inner = keccak256(
        ATTESTED_BLOCK_TAG + checkpoint.inner_hash() + block_number.to_bytes(8, "big") + block_hash
    )
    return keccak256(EIP191_PREFIX + inner)


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
        self._warned: set[Path] = set()  # misplaced files already reported (readers poll)

    def _lane(self, origin: int, outbox: bytes) -> Path:
        return self.root / str(origin) / ("0x" + outbox.hex())

    def publish(self, signed: SignedCheckpoint) -> None:
        """Write one signature, refusing to sign two roots at the same index (equivocation).

        Only a file that is this signer's, for this very origin, outbox and index, counts as
        "already signed": a genuine file copied here from elsewhere is overwritten."""
        cp = signed.checkpoint
        lane = self._lane(cp.origin, cp.outbox)
        path = lane / f"{cp.index:010d}" / f"0x{signed.signer.hex()}.json"
        previous = self._read_own(path, signed.signer, cp.origin, cp.outbox, cp.index)
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
        found = (self._read_at(p, origin, outbox, None) for p in json_files(latest))
        return sorted({s.checkpoint.index for s in found if s is not None}, reverse=True)

    def signatures(self, origin: int, outbox: bytes, index: int) -> list[SignedCheckpoint]:
        """Every readable signature published for ``index`` (unverified) whose content matches
        its place: this origin, outbox and index, and the signer its file is named after."""
        folder = self._lane(origin, outbox) / f"{index:010d}"
        found = (self._read_at(p, origin, outbox, index) for p in json_files(folder))
        return [s for s in found if s is not None]

    def latest_own(self, origin: int, outbox: bytes, signer: bytes) -> SignedCheckpoint | None:
        """The newest checkpoint ``signer`` published (an attester resumes from it), only if its
        signature is ``signer``'s and it is of this lane: others can write to the store too."""
        return self._read_own(
            self._lane(origin, outbox) / "latest" / f"0x{signer.hex()}.json",
            signer,
            origin,
            outbox,
            None,
        )

    def signed_by(self, checkpoint: Checkpoint, signer: bytes) -> bool:
        """Did ``signer`` sign exactly ``checkpoint``? Its file must hold a signature that
        recovers to ``signer`` (a file name or field proves nothing: the store is shared)."""
        cp = checkpoint
        path = self._lane(cp.origin, cp.outbox) / f"{cp.index:010d}" / f"0x{signer.hex()}.json"
        own = self._read_own(path, signer, cp.origin, cp.outbox, cp.index)
        return own is not None and own.checkpoint == checkpoint

    def _read_own(
        self, path: Path, signer: bytes, origin: int, outbox: bytes, index: int | None
    ) -> SignedCheckpoint | None:
        signed = self._read_at(path, origin, outbox, index)
        if signed is None or signed.signer != signer:
            return None
        try:
            if recover_signer(signed.checkpoint.digest(), signed.signature) != signer:
                return None
        except VerificationError:
            return None
        return signed

    def _read_at(
        self, path: Path, origin: int, outbox: bytes, index: int | None
    ) -> SignedCheckpoint | None:
        """The file at ``path`` if its content belongs there (``index`` None: a ``latest``
        file, of any index); a misplaced one is reported once and skipped."""
        signed = self._read(path)
        if signed is None:
            return None
        cp = signed.checkpoint
        problems = []
        if (cp.origin, cp.outbox) != (origin, outbox):
            problems.append(f"origin {cp.origin} outbox 0x{cp.outbox.hex()}")
        if index is not None and cp.index != index:
            problems.append(f"index {cp.index}")
        if path.stem != f"0x{signed.signer.hex()}":
            problems.append(f"signer 0x{signed.signer.hex()}")
        if not problems:
            return signed
        if path not in self._warned:
            self._warned.add(path)
            log.warning(
                "ignoring %s: it holds a checkpoint of %s, not of its place in the store "
                "(copied or replayed?)",
                path,
                ", ".join(problems),
            )
        return None

    @staticmethod
    def _read(path: Path) -> SignedCheckpoint | None:
        try:
            text = read_small_file(path)
            return None if text is None else SignedCheckpoint.from_json(text)
        except Exception:  # anyone may write here: nothing read may stop a reader
            # Missing, corrupt or foreign files are skipped: signatures are verified anyway.
            return None


def read_small_file(path: Path, limit: int = MAX_FILE_BYTES) -> str | None:
    """The text of ``path`` if it is a regular file of at most ``limit`` bytes, else None.

    The store is writable by others, who may plant a FIFO (opening one for reading blocks until
    someone writes: hence ``O_NONBLOCK``, and nothing is read from anything but a regular file)
    or a symlink to ``/dev/zero`` or a huge file (hence at most ``limit`` + 1 bytes are read).
    OSError if it cannot be opened at all.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = file.read(limit + 1)
    return None if len(data) > limit else data.decode("utf-8")


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
