"""The checkpoint store is shared and writable by others: what an attester believes it signed
must carry its own signature (relayer.checkpoints.CheckpointStore)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from relayer.checkpoints import MAX_FILE_BYTES, CheckpointStore, SignedCheckpoint

KEY = bytes.fromhex("11" * 32)
OTHER = bytes.fromhex("22" * 32)
CP = Checkpoint(origin=1, outbox=b"\x0a" * 32, root=b"\x0b" * 32, index=4)


def signed(checkpoint: Checkpoint, *, by: bytes, claimed: bytes | None = None) -> SignedCheckpoint:
    return SignedCheckpoint(
        checkpoint=checkpoint,
        signer=address_of(by) if claimed is None else claimed,
        signature=sign_checkpoint(by, checkpoint),
        block_number=7,
        block_hash=b"\x0c" * 32,
    )


def forge(store: CheckpointStore, fake: SignedCheckpoint) -> None:
    """Write a file the way anybody with access to the directory could."""
    cp = fake.checkpoint
    lane = store.root / str(cp.origin) / ("0x" + cp.outbox.hex())
    for folder in (lane / f"{cp.index:010d}", lane / "latest"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"0x{fake.signer.hex()}.json").write_text(fake.to_json())


def test_own_signature_counts(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.publish(signed(CP, by=KEY))
    assert store.signed_by(CP, address_of(KEY))
    assert not store.signed_by(CP, address_of(OTHER))
    own = store.latest_own(CP.origin, CP.outbox, address_of(KEY))
    assert own is not None and own.checkpoint == CP


def test_a_forged_file_in_the_attesters_name_is_not_its_signature(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    forged_cp = Checkpoint(origin=1, outbox=CP.outbox, root=b"\xee" * 32, index=9)
    forge(store, signed(forged_cp, by=OTHER, claimed=address_of(KEY)))
    assert not store.signed_by(forged_cp, address_of(KEY))
    assert store.latest_own(CP.origin, CP.outbox, address_of(KEY)) is None  # no fake resume
    # Nor can a forged file block the attester from signing the real root at that index.
    real = Checkpoint(origin=1, outbox=CP.outbox, root=b"\x0b" * 32, index=9)
    store.publish(signed(real, by=KEY))
    assert store.signed_by(real, address_of(KEY))


def test_garbage_files_are_skipped(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.publish(signed(CP, by=KEY))
    folder = tmp_path / "1" / ("0x" + CP.outbox.hex()) / f"{CP.index:010d}"
    (folder / "0xinf.json").write_text('{"checkpoint": {"index": Infinity}}')
    (folder / "0xdeep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert [s.signer for s in store.signatures(CP.origin, CP.outbox, CP.index)] == [address_of(KEY)]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    origin=st.integers(1, 3),
    index=st.integers(0, 3),
    moved=st.sampled_from(["origin", "outbox", "index", "name"]),
)
def test_a_genuine_file_counts_only_where_it_belongs(
    tmp_path_factory: pytest.TempPathFactory, origin: int, index: int, moved: str
) -> None:
    """A copy of a genuine signature moved to another origin, outbox, index or file name is
    not read there: not as a signature, not as "already signed", not as a resume point."""
    store = CheckpointStore(tmp_path_factory.mktemp("store"))
    real = Checkpoint(origin=origin, outbox=CP.outbox, root=CP.root, index=index)
    genuine = signed(real, by=KEY)
    place = {
        "origin": Checkpoint(origin=origin + 1, outbox=CP.outbox, root=CP.root, index=index),
        "outbox": Checkpoint(origin=origin, outbox=b"\x0f" * 32, root=CP.root, index=index),
        "index": Checkpoint(origin=origin, outbox=CP.outbox, root=CP.root, index=index + 1),
        "name": real,
    }[moved]
    name = address_of(OTHER) if moved == "name" else address_of(KEY)
    lane = store.root / str(place.origin) / ("0x" + place.outbox.hex())
    for folder in (lane / f"{place.index:010d}", lane / "latest"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"0x{name.hex()}.json").write_text(genuine.to_json())
    assert store.signatures(place.origin, place.outbox, place.index) == []
    assert store.latest_indices(place.origin, place.outbox) == ([index] if moved == "index" else [])
    if moved != "name":
        # A ``latest`` file names no index: an older own one of this lane is a fair resume point.
        resume = store.latest_own(place.origin, place.outbox, address_of(KEY))
        assert resume == (genuine if moved == "index" else None)
        other_root = Checkpoint(place.origin, place.outbox, b"\x0d" * 32, place.index)
        store.publish(signed(other_root, by=KEY))  # no "second root": the copy is not ours here
        assert store.signed_by(other_root, address_of(KEY))


def test_a_planted_fifo_or_oversized_file_cannot_hang_a_reader(tmp_path: Path) -> None:
    """Anyone who can write the store can plant a FIFO (opening it for reading blocks until
    someone writes) or a huge file (a symlink to /dev/zero never ends) where a reader looks:
    ``latest/`` is read by the relayer every poll and by an attester at start. Such a file is
    no signature file: it is skipped, at once and at bounded cost."""
    store = CheckpointStore(tmp_path)
    lane = tmp_path / str(CP.origin) / ("0x" + CP.outbox.hex())
    latest = lane / "latest"
    latest.mkdir(parents=True)
    os.mkfifo(latest / f"0x{address_of(KEY).hex()}.json")
    # Genuine content, padded past any signature file's size with JSON whitespace.
    padded = signed(CP, by=OTHER).to_json() + " " * (2 * MAX_FILE_BYTES)
    (latest / f"0x{address_of(OTHER).hex()}.json").write_text(padded)

    answers: list[object] = []
    reader = threading.Thread(
        target=lambda: answers.extend(
            [
                store.latest_indices(CP.origin, CP.outbox),
                store.latest_own(CP.origin, CP.outbox, address_of(KEY)),
            ]
        ),
        daemon=True,  # on the old code it blocks in open() forever: do not hang the suite
    )
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "a reader blocked on a planted FIFO"
    assert answers == [[], None]
