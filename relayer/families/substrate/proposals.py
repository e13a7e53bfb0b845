"""Delivery proposals: the files through which the relayer asks the committee's multisig to
deliver a batch (the checkpoint, the messages and their branches).

The store is a shared directory anyone may write: a proposal is only a request. Each attester
verifies every message of it against a root that it and a quorum signed before approving, and
the relayer counts only the files it wrote itself (:meth:`ProposalStore.ours`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from light_clients.merkle import TREE_DEPTH
from light_clients.message import MAX_MESSAGE_BYTES, decode_message
from relayer.checkpoints import (
    atomic_write,
    checkpoint_from_json,
    checkpoint_to_json,
    json_files,
    parse_hex,
    read_small_file,
)
from relayer.config import SUBSTRATE_BATCH_SIZE


@dataclass(frozen=True)
class Proposal:
    """A batch of messages for a Substrate destination, proven against one checkpoint."""

    destination: int
    checkpoint: Checkpoint
    messages: tuple[bytes, ...]
    branches: tuple[tuple[bytes, ...], ...]
    created: float = 0.0

    @property
    def name(self) -> str:
        """The file name: origin, first and last nonce, and the checkpoint index."""
        nonces = [decode_message(m).nonce for m in self.messages]
        cp = self.checkpoint
        return f"{cp.origin:010d}-{min(nonces):010d}-{max(nonces):010d}-{cp.index:010d}.json"

    def to_json(self) -> str:
        """The file contents."""
        cp = self.checkpoint
        return json.dumps(
            {
                "destination": self.destination,
                "checkpoint": checkpoint_to_json(cp),
                "messages": ["0x" + m.hex() for m in self.messages],
                "branches": [["0x" + h.hex() for h in b] for b in self.branches],
                "created": self.created,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Proposal:
        """Parse a file; ValueError/KeyError/TypeError on anything malformed (a bad checkpoint
        or message included: nothing in a proposal is trusted, but it must at least parse)."""
        obj = json.loads(text)
        cp = obj["checkpoint"]
        branches = tuple(tuple(parse_hex(h) for h in b) for b in obj["branches"])
        if any(len(b) != TREE_DEPTH or any(len(h) != 32 for h in b) for b in branches):
            raise ValueError("a branch is not 32 hashes of 32 bytes")
        messages = tuple(parse_hex(m) for m in obj["messages"])
        if not messages or len(messages) != len(branches):
            raise ValueError("messages and branches do not pair up")
        try:
            for message in messages:
                decode_message(message)
            checkpoint = checkpoint_from_json(cp)
        except VerificationError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            destination=int(obj["destination"]),
            checkpoint=checkpoint,
            messages=messages,
            branches=branches,
            created=float(obj.get("created", 0.0)),
        )


# The largest proposal file the relayer writes: SUBSTRATE_BATCH_SIZE messages of the largest
# size, hex-encoded, each with its 32-hash branch, plus the checkpoint (a generous 4 KiB).
MAX_PROPOSAL_BYTES = SUBSTRATE_BATCH_SIZE * (2 * MAX_MESSAGE_BYTES + TREE_DEPTH * 72 + 16) + 4096


class ProposalStore:
    """``<checkpoint store>/proposals/<destination>/<proposal>.json``: batches the relayer asks
    the committee to deliver. Nothing in it is trusted: attesters check every message, and the
    relayer tells the proposals this object wrote (:meth:`ours`) from any other file there."""

    def __init__(self, checkpoint_store: Path) -> None:
        self.root = checkpoint_store / "proposals"
        self._published: dict[Path, str] = {}
        self._first_seen: dict[Path, float] = {}

    def publish(self, proposal: Proposal) -> Path:
        """Write ``proposal`` (atomically); returns its path."""
        path = self.root / str(proposal.destination) / proposal.name
        text = proposal.to_json()
        atomic_write(path, text)
        self._published[path] = text
        return path

    def ours(self, path: Path, proposal: Proposal) -> bool:
        """Is ``proposal`` (read from ``path``) exactly what this object published there? Only
        such a proposal's ``created`` is ours, and only its timing out says the committee did
        not execute what we asked: a file anyone else wrote (or rewrote; or ours from before a
        restart) must not count as a failed attempt of its messages."""
        return self._published.get(path) == proposal.to_json()

    def first_seen(self, path: Path, now: float) -> float:
        """When this object first listed ``path`` (``now`` if never): a clock for files that
        are not :meth:`ours`, whose ``created`` is anyone's to write."""
        return self._first_seen.setdefault(path, now)

    def pending(self, destination: int) -> list[tuple[Path, Proposal]]:
        """Every readable proposal for ``destination``, oldest name first."""
        found = []
        listed = set(json_files(self.root / str(destination)))
        for path in sorted(listed):
            try:
                # Not read_text(): a FIFO planted here would block the read for ever, and a
                # symlink to /dev/zero would fill the memory (relayer and attesters alike).
                text = read_small_file(path, MAX_PROPOSAL_BYTES)
                if text is None:
                    continue  # not a regular file, or larger than any proposal we write
                found.append((path, Proposal.from_json(text)))
            except Exception:  # anyone may write here: nothing read may stop us
                continue  # half-deleted or foreign: ignored, like unreadable checkpoints
        # Files someone else removed are forgotten (memory stays bounded by what is there).
        here = self.root / str(destination)
        for memory in (self._published, self._first_seen):
            for gone in [p for p in memory if p.parent == here and p not in listed]:
                del memory[gone]
        return found

    def remove(self, path: Path) -> None:
        """Forget a proposal (delivered, or superseded)."""
        path.unlink(missing_ok=True)
        self._published.pop(path, None)
        self._first_seen.pop(path, None)


def new_proposal(
    destination: int, checkpoint: Checkpoint, messages: Sequence[bytes], branches: Sequence[Any]
) -> Proposal:
    """A :class:`Proposal` stamped with the current time."""
    return Proposal(
        destination=destination,
        checkpoint=checkpoint,
        messages=tuple(messages),
        branches=tuple(tuple(b) for b in branches),
        created=time.time(),
    )
