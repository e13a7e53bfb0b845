"""adapters.substrate.signing.sign_sr25519: an sr25519 signer's answer is bounded in time and
checked before anything is submitted (issue #12, relayer/signer.py "What is bounded and checked").

Pure: the signer is called as ``adapters.substrate.client.SubstrateClient.submit_call`` calls
it, with the payload substrate-interface would have signed. The same signers against a real
Asset Hub (the submission refused before its nonce is spent, and the Substrate worker slot
free while the signer hangs) are in tests/test_signer.py, whose module already runs chopsticks.

What a hostile or broken signer can try, and what each answer gets:

* hang → one line after the timeout, its thread counted as stuck until it returns;
* raise with a secret in the text → one line naming only the exception's type;
* answer 63/65 bytes, a str, an int → refused by shape;
* answer a real sr25519 signature by another key, or of another payload, or 64 random bytes →
  refused by verification under the account's own key.
"""

from __future__ import annotations

import threading
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from substrateinterface import Keypair

from adapters.errors import AdapterError
from adapters.signing import (
    SIGNER_THREADS,
    SignerError,
    SignerHealth,
    call_signer,
    signer_health,
)
from adapters.substrate.client import Call, Submitted, SubstrateClient, _signs_in_process
from adapters.substrate.signing import sign_sr25519
from relayer.signer import LocalSubstrateSigner, as_keypair

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
ALICE_ID = bytes(ALICE.public_key)
PAYLOAD = b"\x04\x00" + b"an extrinsic's signature payload" * 3


class _Remote:
    """A SubstrateSigner that is not ours to trust: it answers what it is told to (or waits)."""

    def __init__(self, answer: Any = None, *, release: threading.Event | None = None) -> None:
        self.answer, self.release = answer, release
        self.public_key, self.ss58_address = ALICE_ID, ALICE.ss58_address
        self.asked: list[bytes] = []
        self.entered = threading.Event()

    def sign(self, payload: bytes) -> bytes:
        self.asked.append(payload)
        self.entered.set()
        if self.release is not None:
            self.release.wait(30)  # a signer that ignores every timeout but ours
        return self.answer if self.answer is not None else bytes(ALICE.sign(payload))


def _sign(signer: _Remote, payload: bytes = PAYLOAD, **kwargs: Any) -> bytes:
    keypair = as_keypair(signer)

    async def go() -> bytes:
        return await sign_sr25519(
            ALICE_ID, keypair.sign, payload, in_process=_signs_in_process(keypair), **kwargs
        )

    return trio.run(go)


def test_an_honest_signature_comes_back_verified_in_either_path() -> None:
    remote = _Remote()
    signature = _sign(remote)
    assert ALICE.verify(PAYLOAD, signature) and remote.asked == [PAYLOAD]

    async def local() -> bytes:
        keypair = as_keypair(LocalSubstrateSigner(ALICE))
        assert _signs_in_process(keypair)  # ours: inline, no thread hop
        return await sign_sr25519(ALICE_ID, keypair.sign, PAYLOAD, in_process=True)

    assert ALICE.verify(PAYLOAD, trio.run(local))


def test_which_keypairs_sign_inline() -> None:
    assert _signs_in_process(ALICE)  # a substrate-interface keypair with its secret
    assert _signs_in_process(as_keypair(LocalSubstrateSigner(ALICE)))
    assert not _signs_in_process(as_keypair(_Remote()))  # anything else: a thread, bounded
    assert not _signs_in_process(Keypair(public_key=ALICE_ID, ss58_format=42))


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        (b"\x01" * 63, r"answered 63 bytes, not a 64-byte signature"),
        (b"\x01" * 65, r"answered 65 bytes, not a 64-byte signature"),
        ("0x" + "11" * 64, r"answered str, not a 64-byte signature"),
        (7, r"answered int, not a 64-byte signature"),
        (bytes(BOB.sign(PAYLOAD)), r"does not verify under its own key"),  # another key
        (bytes(ALICE.sign(b"something else")), r"does not verify under its own key"),
        (b"\x00" * 64, r"does not verify under its own key"),
    ],
    ids=["short", "long", "text", "int", "other-key", "other-payload", "zeros"],
)
def test_a_wrong_answer_is_one_refusal_line(answer: Any, refused: str) -> None:
    with pytest.raises(SignerError, match=refused) as caught:
        _sign(_Remote(answer))
    assert "\n" not in str(caught.value) and ALICE_ID.hex() in str(caught.value)


@given(noise=st.binary(min_size=64, max_size=64), payload=st.binary(min_size=1, max_size=300))
def test_no_noise_passes_for_a_signature(noise: bytes, payload: bytes) -> None:
    """64 bytes that are not Alice's signature of ``payload`` never pass (a forged signature
    would need her key; hypothesis only shows the check is on every path)."""

    async def go() -> bytes:
        return await sign_sr25519(ALICE_ID, lambda _: noise, payload, in_process=True)

    with pytest.raises(SignerError, match="does not verify"):
        trio.run(go)


def test_an_exception_is_one_line_naming_only_its_type() -> None:
    class Leaky(_Remote):
        def sign(self, payload: bytes) -> bytes:
            raise ConnectionResetError("https://user:hunter2@kms.example/sign?token=SECRET")

    with pytest.raises(SignerError) as caught:
        _sign(Leaky())
    assert str(caught.value) == f"signer 0x{ALICE_ID.hex()} failed: ConnectionResetError"


def test_a_hanging_signer_is_cut_off_and_counted_stuck_until_it_returns() -> None:
    release = threading.Event()
    remote = _Remote(release=release)

    async def go() -> tuple[float, str, int, int]:
        keypair = as_keypair(remote)
        started = trio.current_time()
        with pytest.raises(SignerError) as caught:
            await sign_sr25519(ALICE_ID, keypair.sign, PAYLOAD, in_process=False, timeout=0.3)
        waited = trio.current_time() - started
        stuck = signer_health().stuck
        release.set()  # the signer finally answers: its late answer is dropped, its slot freed
        with trio.fail_after(10):
            while signer_health().stuck:
                await trio.sleep(0.01)
        return waited, str(caught.value), stuck, signer_health().errors

    try:
        waited, line, stuck, errors = trio.run(go)
    finally:
        release.set()
    assert 0.3 <= waited < 5
    assert line == f"signer 0x{ALICE_ID.hex()} did not answer within 0.3 s"
    assert stuck == 1 and errors == 1 and remote.asked == [PAYLOAD]


def test_a_wedged_sr25519_signer_does_not_stop_the_checkpoint_signer() -> None:
    """Review M3: an attester signs checkpoints (secp256k1) and Asset Hub extrinsics (sr25519)
    in one trio run. A remote sr25519 signer that ignores its own timeout used to take all
    SIGNER_THREADS slots of the process within as many extrinsics, and then the checkpoint
    signatures were refused as well ("all 4 signer threads are held"): every EVM origin
    stopped being attested because of one Substrate key. Each signer has slots of its own now:
    the sr25519 one is wedged (refused at once, named by /readyz's line), the checkpoint one
    still signs in a thread, and the health sums both pools."""
    release = threading.Event()
    remote = _Remote(release=release)

    class CheckpointSigner:  # a remote secp256k1 signer: called in a thread, never inline
        address = b"\x11" * 20

    async def go() -> tuple[str, int, SignerHealth, int]:
        keypair = as_keypair(remote)
        for _ in range(SIGNER_THREADS):  # each one abandoned after 0.1 s, its thread stuck
            with pytest.raises(SignerError, match="did not answer"):
                await sign_sr25519(ALICE_ID, keypair.sign, PAYLOAD, in_process=False, timeout=0.1)
        with trio.fail_after(2), pytest.raises(SignerError) as wedged:  # at once: not asked
            await sign_sr25519(ALICE_ID, keypair.sign, PAYLOAD, in_process=False, timeout=30)
        here = threading.get_ident()
        with trio.fail_after(5):
            other = await call_signer(CheckpointSigner(), threading.get_ident, timeout=5)
        return str(wedged.value), other, signer_health(), here

    try:
        line, other_thread, health, here = trio.run(go)
    finally:
        release.set()
    assert line.startswith(f"signer 0x{ALICE_ID.hex()} not asked: all 4 signer threads are held")
    assert other_thread != here  # signed, in a thread of its own pool
    assert health.stuck == SIGNER_THREADS and health.threads == 2 * SIGNER_THREADS
    assert health.wedged is not None and "\n" not in health.wedged
    assert health.wedged.count(f"0x{ALICE_ID.hex()} for ") == SIGNER_THREADS
    assert "0x" + "11" * 20 not in health.wedged
    assert len(remote.asked) == SIGNER_THREADS  # the wedged signer was not asked a fifth time


# --------------------------------------------------------------------------- submit_call's steps

GENESIS = b"\x45" * 32


class _Node:
    """Just what ``SubstrateClient.submit_call`` asks of substrate-interface, in its worker
    slot. ``upgrade`` makes the runtime change when the extrinsic is encoded (what
    ``create_signed_extrinsic``'s own ``init_runtime`` sees after an upgrade); ``hold`` keeps
    ``author_submitExtrinsic`` waiting until it is set (``entered`` says it was asked)."""

    def __init__(self, *, upgrade: bool = False, hold: threading.Event | None = None) -> None:
        self.runtime_version, self.transaction_version = 1_000_000, 15
        self.upgrade, self.hold, self.entered = upgrade, hold, threading.Event()
        self.submitted: list[str] = []

    def rpc_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "author_submitExtrinsic":
            self.entered.set()
            if self.hold is not None:
                self.hold.wait(30)
            self.submitted.append(params[0])
            return {"result": "0x" + bytes(32).hex()}
        answers = {
            "chain_getHeader": {"number": "0x10"},
            "chain_getFinalizedHead": "0x" + "ab" * 32,
            "system_accountNextIndex": 7,
        }
        return {"result": answers[method]}

    def get_block_hash(self, number: int) -> str:
        return "0x" + GENESIS.hex()

    def generate_signature_payload(self, **_: Any) -> Any:
        return SimpleNamespace(data=PAYLOAD)

    def create_signed_extrinsic(self, **_: Any) -> Any:
        if self.upgrade:
            self.runtime_version += 1  # init_runtime() found the upgraded runtime
        return SimpleNamespace(data=SimpleNamespace(data=b"\x01"), extrinsic_hash=bytes(32))


def _client(node: _Node) -> SubstrateClient:
    client = SubstrateClient("ws://stand-in:9944")
    client._substrate = cast(Any, node)
    client._genesis = GENESIS
    return client


REMARK = Call("System", "remark", b"\x00", b"\x77" * 32, None)


def test_a_runtime_upgrade_between_signing_and_encoding_is_refused_before_submitting() -> None:
    """Review L4: the payload is generated in one worker-slot call and the extrinsic encoded in
    another, with the signer (up to SIGN_TIMEOUT) in between. A runtime upgrade there gives a
    signature over the old spec version encoded with the new metadata: the chain would refuse
    it (badProof) after a round trip. It is refused before submitting, in one line naming both
    versions, and no nonce is counted; the next attempt goes through."""
    node = _Node(upgrade=True)
    client = _client(node)
    with pytest.raises(AdapterError) as refused:
        trio.run(partial(client.submit_call, ALICE, REMARK, wait_for_inclusion=False))
    line = str(refused.value)
    assert "the runtime changed from spec 1000000 (transaction version 15) to spec 1000001" in line
    assert line.startswith("sign System.remark on ws://stand-in:9944: ") and "\n" not in line
    assert node.submitted == [] and client._next_nonces == {}
    node.upgrade = False  # the runtime is read afresh: the next attempt is signed for it
    submitted = trio.run(partial(client.submit_call, ALICE, REMARK, wait_for_inclusion=False))
    assert submitted.nonce == 7 and len(node.submitted) == 1


@pytest.mark.parametrize("during", ["signing", "submitting"])
def test_a_wait_failing_while_a_submission_is_under_way_spends_no_unsure_nonce(
    during: str,
) -> None:
    """Review M1, the client's side: an earlier extrinsic's wait fails (its nonce count is
    forgotten: which of our nonces the chain will use is unknown) while the next submission
    is under way. While it is being signed (its nonce read before or after the forgetting:
    the node's leaves out our extrinsics in a block being built), it is refused in one line,
    nothing submitted. Once at the node it goes through, but does not set a count again from
    the one it was numbered with: the next submission asks the node."""
    hold = threading.Event()
    node = _Node(hold=hold if during == "submitting" else None)
    remote = _Remote(release=hold if during == "signing" else None)
    entered = node.entered if during == "submitting" else remote.entered
    client = _client(node)
    earlier = Submitted(b"\xee" * 32, ALICE_ID, 6, 16, 80)
    outcome: list[str] = []

    async def submit() -> None:
        try:
            await client.submit_call(as_keypair(remote), REMARK, wait_for_inclusion=False)
            outcome.append("submitted")
        except AdapterError as exc:
            outcome.append(str(exc))

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await trio.to_thread.run_sync(entered.wait, 10)
            with pytest.raises(AdapterError, match="not included"):
                await client.wait_included(earlier, timeout=0)  # it fails now, meanwhile
            hold.set()

    try:
        trio.run(scenario)
    finally:
        hold.set()
    if during == "signing":
        [line] = outcome
        assert "an earlier extrinsic of this account failed while this one" in line, line
        assert line.startswith("sign System.remark on ws://stand-in:9944: ") and "\n" not in line
        assert node.submitted == []
    else:
        assert outcome == ["submitted"] and len(node.submitted) == 1
    assert ALICE_ID not in client._next_nonces
