"""An attester whose checkpoint store is busy (a held lock, a server that does not answer)
signs nothing that poll and signs at the next one, rather than exiting or hanging.

The origin is a stand-in that states a final outbox (what the families prove is tested with
them); the store is the real directory store with its publish made to fail as the PostgreSQL
store does when its lock times out (tests/test_checkpoint_store_bounds.py shows that)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from adapters.rpc import EndpointHealth
from relayer.attester import AttesterState, OriginProgress, attest_once
from relayer.checkpoints import CheckpointStoreBusy, DirectoryCheckpointStore, SignedCheckpoint
from relayer.config import ChainConfig, FinalityPolicy
from relayer.family import Head, OutboxState, ScannedRange
from relayer.signer import LocalSigner

KEY = bytes(31) + b"\x05"
CHAIN = ChainConfig(
    name="alpha",
    domain=1,
    kind="evm",
    rpc=("http://127.0.0.1:1",),
    finality=FinalityPolicy("finalized"),
    chain_id=1,
    contracts={"outbox": b"\x03" * 20},
)


class StatedOrigin:
    """Final block 5 with three messages in the outbox."""

    endpoints: Sequence[EndpointHealth] = ()

    async def final_head(self) -> Head:
        return Head(5, b"\x01" * 32)

    async def block_hash(self, number: int) -> bytes | None:
        return b"\x01" * 32

    async def scan(self, tree: object, first: int, final: Head) -> ScannedRange:
        raise AssertionError("an attester does not scan")

    async def outbox_state(self, head: Head) -> OutboxState:
        return OutboxState(count=3, root=b"\x02" * 32)


class BusyStore(DirectoryCheckpointStore):
    busy = True

    def publish(self, signed: SignedCheckpoint) -> None:
        if self.busy:
            raise CheckpointStoreBusy("checkpoint store busy: lock held (test)")
        super().publish(signed)


def test_a_busy_store_costs_one_poll_not_the_attester(tmp_path: Path) -> None:
    store = BusyStore(tmp_path)
    state = AttesterState()
    progress = OriginProgress(last_index=-1, last_block=None)

    async def poll() -> None:
        await attest_once(StatedOrigin(), CHAIN, LocalSigner(KEY), store, state, progress=progress)

    trio.run(poll)
    assert (state.signatures, state.errors, progress.last_index) == (0, 1, -1)
    store.busy = False
    trio.run(poll)  # the same final head: proven again, and signed this time
    assert (state.signatures, progress.last_index) == (1, 2)
