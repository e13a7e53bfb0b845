"""The checkpoint store is shared and writable by others: what an attester believes it signed
must carry its own signature (relayer.checkpoints.CheckpointStore)."""

from __future__ import annotations

from pathlib import Path

from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from relayer.checkpoints import CheckpointStore, SignedCheckpoint

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
