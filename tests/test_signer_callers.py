"""Every secp256k1 signature goes through the Signer interface (issue #12), and no caller trusts
what a signer answers.

The signer here, :class:`RemoteSigner`, is what an operator would write for an HSM, a KMS or a
signing service: one class, written against relayer/signer.py's public interface only, holding
no key. It forwards each request as JSON to a :class:`SigningService` (the other end, which holds
the key) and relays the answer. The service can be told to misbehave the ways a remote one can:
sign with another key, sign another transaction, answer garbage, refuse, or hang.

What is checked, for each caller that signs (the transaction engine, the attester's checkpoints,
the EVM user commands): a wrong answer is refused before anything leaves the process (no
``eth_sendRawTransaction``, no hash recorded, nothing in the checkpoint store), as a failed RPC
(an ``AdapterError``: one line, no secret, the next round tries again with the same key), and a
hung signer costs a bounded wait. The pure check of a signed transaction is a property test
against eth-account's own signatures.

And what the review of that change found (F4): signer threads that never come back are counted,
named, exported and turn ``/readyz`` red, and a call no longer waits for them; any exception of
a remote signer is one line naming its type only (its text here holds the key: the secret
checks can fail); a refused fee bump is said once per transaction; the attester signs only as
the address it started with; a subclass of ``LocalSigner`` is not trusted to sign inline.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import trio
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_attester_busy_store import CHAIN as ATTESTED_CHAIN
from test_attester_busy_store import StatedOrigin
from test_legacy_fees import CountingClient

import adapters.signing as signing_module
import relayer.attester as attester_module
from adapters.errors import AdapterError
from adapters.evm.tx import (
    FEE_MODELS,
    SentTx,
    TxEngine,
    TxNotSigned,
    check_signed_transaction,
    transaction_dict,
)
from adapters.jsonrpc import call_sync
from adapters.signing import SIGNER_THREADS, SignerError, call_signer
from devnet.anvil import AnvilProcess, free_port
from light_clients.committee import address_of, recover_signer
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from relayer.attester import AttesterState, OriginProgress, attest_once
from relayer.checkpoints import DirectoryCheckpointStore
from relayer.config import ChainConfig, Config, FinalityPolicy
from relayer.families.evm import user as user_evm
from relayer.metrics import serve_metrics
from relayer.signer import LocalSigner, Signer

KEY = keccak256(b"signer callers: the key behind the service")
OTHER_KEY = keccak256(b"signer callers: a key that is not the signer's")
ADDRESS, OTHER = address_of(KEY), address_of(OTHER_KEY)
SECRETS = (KEY.hex(), OTHER_KEY.hex())
RECIPIENT = b"\x5e" * 20
CHAIN_ID = 31337


class SigningService:
    """The far end of a remote signer: holds the key, answers JSON requests. ``mode`` says how
    it answers: ``honest``, ``other key`` (a valid signature by another key), ``other tx`` (the
    right key over another nonce), ``garbage``, ``refuse`` (an error answer), ``hang``, or
    ``reset``: the connection fails with an error whose text quotes the key (a URL with a
    token, a request echoed back: what a transport's exception may carry)."""

    def __init__(self) -> None:
        self.mode = "honest"
        self.requests: list[str] = []
        self.release = threading.Event()  # set at the end: a hung request then returns
        self._mine, self._other = LocalSigner(KEY), LocalSigner(OTHER_KEY)

    def handle(self, request: str) -> str:
        ask = json.loads(request)
        self.requests.append(ask["method"])
        if self.mode == "refuse":
            return json.dumps({"error": "policy: not now"})
        if self.mode == "reset":
            raise ConnectionResetError(f"kms.example/sign?token={KEY.hex()}: connection reset")
        if self.mode == "hang":
            self.release.wait(60)
            return json.dumps({"error": "too late"})
        if self.mode == "garbage":
            return json.dumps({"result": "deadbeef"})
        signer = self._other if self.mode == "other key" else self._mine
        if ask["method"] == "sign_digest":
            return json.dumps({"result": signer.sign_digest(bytes.fromhex(ask["digest"])).hex()})
        tx = dict(ask["tx"])
        if self.mode == "other tx":
            tx["nonce"] += 1
        return json.dumps({"result": signer.sign_transaction(tx).hex()})


class RemoteSigner:
    """A :class:`~relayer.signer.Signer` holding no key: each request goes to the service.
    Not ``signs_in_process``, so callers reach it from a worker thread, under a timeout."""

    def __init__(self, service: SigningService, address: bytes) -> None:
        self._service, self._address = service, address

    @property
    def address(self) -> bytes:
        return self._address

    def _ask(self, request: dict[str, Any]) -> bytes:
        answer = json.loads(self._service.handle(json.dumps(request)))
        if "error" in answer:
            raise SignerError(f"signer 0x{self._address.hex()}: refused: {answer['error']}")
        return bytes.fromhex(answer["result"])

    def sign_digest(self, digest: bytes) -> bytes:
        return self._ask({"method": "sign_digest", "digest": digest.hex()})

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        return self._ask({"method": "sign_transaction", "tx": dict(tx)})


@pytest.fixture
def service() -> Iterator[SigningService]:
    """A service for one test; its hung requests are released at the end (no stray thread)."""
    answering = SigningService()
    try:
        yield answering
    finally:
        answering.release.set()


def one_line_without_secrets(text: str) -> bool:
    return "\n" not in text and not any(secret in text.lower() for secret in SECRETS)


def pending_nonce(chain: AnvilProcess, address: bytes) -> int:
    return int(
        call_sync(chain.rpc_url, "eth_getTransactionCount", [to_hex(address), "pending"]), 16
    )


# --------------------------------------------------------------------------- the pure check


@st.composite
def sent_transactions(draw: st.DrawFn) -> SentTx:
    max_fee = draw(st.integers(0, 2**128))
    return SentTx(
        nonce=draw(st.integers(0, 2**64 - 1)),
        to=draw(st.binary(min_size=20, max_size=20)),
        data=draw(st.binary(max_size=200)),
        gas=draw(st.integers(21_000, 2**63)),
        max_fee=max_fee,
        priority_fee=draw(st.integers(0, max_fee)),
        fee_model=draw(st.sampled_from(FEE_MODELS)),
        value=draw(st.integers(0, 2**256 - 1)),
    )


@given(sent_transactions(), st.integers(1, 2**32), st.data())
def test_a_signed_transaction_is_accepted_exactly_as_signed(
    sent: SentTx, chain_id: int, data: st.DataObject
) -> None:
    """What eth-account signs passes, with eth-account's hash; any byte changed does not."""
    signed = Account.sign_transaction(transaction_dict(sent, chain_id), KEY)
    raw = bytes(signed.raw_transaction)
    assert check_signed_transaction(raw, sent, chain_id, ADDRESS) == bytes(signed.hash)
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="flip")
    changed = raw[:position] + bytes((raw[position] ^ flip,)) + raw[position + 1 :]
    with pytest.raises(SignerError):
        check_signed_transaction(changed, sent, chain_id, ADDRESS)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_signer_error_or_the_transaction(raw: bytes) -> None:
    sent = SentTx(nonce=1, to=RECIPIENT, data=b"", gas=21_000, max_fee=10, priority_fee=1)
    with pytest.raises(SignerError) as refused:
        check_signed_transaction(raw, sent, CHAIN_ID, ADDRESS)
    assert one_line_without_secrets(str(refused.value))


def test_a_transaction_signed_by_another_key_or_for_another_chain_is_refused() -> None:
    sent = SentTx(nonce=3, to=RECIPIENT, data=b"\x01", gas=21_000, max_fee=10, priority_fee=1)
    legacy = replace(sent, fee_model="legacy")

    def raw(tx: dict[str, Any], key: bytes = KEY) -> bytes:
        return bytes(Account.sign_transaction(tx, key).raw_transaction)

    cases = [
        (raw(transaction_dict(sent, CHAIN_ID), OTHER_KEY), sent, f"signed by 0x{OTHER.hex()}"),
        (raw(transaction_dict(replace(sent, nonce=4), CHAIN_ID)), sent, "another transaction"),
        (raw(transaction_dict(sent, CHAIN_ID + 1)), sent, "another transaction"),
        (raw(transaction_dict(legacy, CHAIN_ID)), sent, "no eip1559 transaction"),
        (raw(transaction_dict(sent, CHAIN_ID)), legacy, "no legacy transaction"),
        # EIP-155's v for another chain, and a pre-EIP-155 legacy one (replayable anywhere).
        (raw(transaction_dict(legacy, CHAIN_ID + 1)), legacy, "not one for chain 31337"),
        (raw({**transaction_dict(legacy, CHAIN_ID), "chainId": None}), legacy, "v = 2[78]"),
    ]
    for answer, asked, reason in cases:
        with pytest.raises(SignerError, match=reason):
            check_signed_transaction(answer, asked, CHAIN_ID, ADDRESS)
    # A high-s copy of a valid signature (the same vote, malleated) is no strict signature.
    good = raw(transaction_dict(sent, CHAIN_ID))
    fields = TypedTransaction.from_bytes(HexBytes(good)).as_dict()
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = {**fields, "s": n - fields["s"], "v": 1 - fields["v"]}
    malleated = bytes(TypedTransaction.from_dict(high_s).encode())
    with pytest.raises(SignerError, match="upper half of the curve order"):
        check_signed_transaction(malleated, sent, CHAIN_ID, ADDRESS)


# --------------------------------------------------------------------------- the bound


def test_hung_signers_hold_their_own_threads_only(service: SigningService) -> None:
    """Twice as many calls as signer threads, all hanging: the first SIGNER_THREADS are a
    SignerError after their timeout, the others (queued for a thread) fail as soon as every
    thread is stuck, without asking the signer; trio's default thread pool (the ledger's
    database calls) stays free. Calls out of time before their thread started hold no slot.
    A LocalSigner is called inline, on the event loop's own thread; a subclass of it (an audit
    log could do I/O) is not: the attribute is not inherited."""
    service.mode = "hang"
    signer = RemoteSigner(service, ADDRESS)
    failures: list[str] = []

    class AuditedSigner(LocalSigner):
        """Where an audit log on a server would go: I/O the parent class does not do."""

    async def hung() -> None:
        with pytest.raises(SignerError) as failed:
            await call_signer(signer, partial(signer.sign_digest, bytes(32)), timeout=0.5)
        failures.append(str(failed.value))

    async def main() -> None:
        here = threading.get_ident()
        assert await call_signer(LocalSigner(KEY), threading.get_ident) == here
        assert await call_signer(AuditedSigner(KEY), threading.get_ident, timeout=5) != here
        for _ in range(SIGNER_THREADS + 1):  # out of time before a thread started: none stuck
            with pytest.raises(SignerError, match=r"did not answer within 0 s"):
                await call_signer(signer, partial(signer.sign_digest, bytes(32)), timeout=0)
        assert service.requests == []
        async with trio.open_nursery() as nursery:
            for _ in range(2 * SIGNER_THREADS):
                nursery.start_soon(hung)
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        assert await trio.to_thread.run_sync(threading.get_ident) != here
        assert await call_signer(LocalSigner(KEY), threading.get_ident) == here  # still inline

    trio.run(main)
    assert service.requests == ["sign_digest"] * SIGNER_THREADS
    timed_out = [line for line in failures if "did not answer within 0.5 s" in line]
    not_asked = [line for line in failures if "held by calls that never returned" in line]
    assert (len(timed_out), len(not_asked)) == (SIGNER_THREADS, SIGNER_THREADS)


async def until_unstuck() -> None:
    """Until every stuck signer call of this run has returned (they free their slots)."""
    with trio.fail_after(5):
        while signing_module.signer_health().stuck:
            await trio.sleep(0.01)


async def _scrape(port: int) -> tuple[dict[str, float], int, dict[str, Any]]:
    """``/metrics`` samples by name, and ``/readyz``'s status and body."""
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    return samples, ready.status_code, ready.json()


def test_stuck_signer_threads_are_counted_named_and_heal(service: SigningService) -> None:
    """The review's wedge (R4 #1): a signer with no timeout of its own hangs SIGNER_THREADS
    calls, then the service is healthy again. The next call fails at once, naming the stuck
    calls (not "did not answer": the signer was not even asked); the metrics say 4 stuck calls
    and count the failures; /readyz says why it is not ready. When the hung requests return at
    last, their threads free themselves: the next call is signed and /readyz is ready."""
    service.mode = "hang"
    signer = RemoteSigner(service, ADDRESS)
    port = free_port()

    async def ask(timeout: float) -> bytes:
        return await call_signer(signer, partial(signer.sign_digest, bytes(32)), timeout=timeout)

    async def snapshot() -> str:
        return ""

    async def loops_run() -> None:
        return None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_metrics, port, snapshot, loops_run)

            async def hang() -> None:
                with pytest.raises(SignerError, match=r"did not answer within 0\.2 s"):
                    await ask(0.2)

            async with trio.open_nursery() as hanging:
                for _ in range(SIGNER_THREADS):
                    hanging.start_soon(hang)
            service.mode = "honest"  # the service is back; the threads are not
            with trio.fail_after(2):  # at once: long before the call's own 30 s
                with pytest.raises(SignerError) as refused:
                    await ask(30)
            line = str(refused.value)
            assert "all 4 signer threads are held by calls that never returned" in line
            assert line.count(f"0x{ADDRESS.hex()} for ") == SIGNER_THREADS  # whose, how long
            assert "did not answer" not in line and "\n" not in line
            assert service.requests == ["sign_digest"] * SIGNER_THREADS  # it was not asked
            samples, status, body = await _scrape(port)
            assert samples["passerelle_signer_stuck_calls"] == SIGNER_THREADS
            assert samples["passerelle_signing_errors_total"] == SIGNER_THREADS + 1
            assert status == 503
            [reason] = body["reasons"]  # the loops run: the stuck signer is the reason
            assert reason.startswith("all 4 signer threads are held by calls that never")
            assert reason.count(f"0x{ADDRESS.hex()} for ") == SIGNER_THREADS

            service.release.set()  # the hung requests return at last
            await until_unstuck()
            signature = await ask(5)
            assert recover_signer(bytes(32), signature) == ADDRESS
            samples, status, body = await _scrape(port)
            assert (samples["passerelle_signer_stuck_calls"], status) == (0, 200)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_waiting_for_a_signer_thread_is_not_charged_to_the_timeout(
    service: SigningService,
) -> None:
    """Every thread busy with a call still within its own timeout: a new call waits for one
    (longer than its own timeout, here) and is then signed; only the signer's answer is timed."""
    service.mode = "hang"
    signer = RemoteSigner(service, ADDRESS)

    async def busy() -> None:
        with pytest.raises(SignerError, match="refused: too late"):  # what a released hang says
            await call_signer(signer, partial(signer.sign_digest, bytes(32)), timeout=30)

    async def release_later() -> None:
        await trio.sleep(0.6)  # twice the waiting call's timeout
        service.release.set()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(SIGNER_THREADS):
                nursery.start_soon(busy)
            with trio.fail_after(5):
                while len(service.requests) < SIGNER_THREADS:
                    await trio.sleep(0.01)
            service.mode = "honest"
            nursery.start_soon(release_later)
            began = trio.current_time()
            digest = keccak256(b"queued")
            signature = await call_signer(signer, partial(signer.sign_digest, digest), timeout=0.3)
            assert trio.current_time() - began >= 0.6  # it did wait for a thread
            assert recover_signer(digest, signature) == ADDRESS

    trio.run(main)


# --------------------------------------------------------------------------- the engine

ENGINE_REFUSALS = [
    ("other key", rf"answered nonce {{n}} signed by 0x{OTHER.hex()}"),
    ("other tx", r"answered nonce {n} with another transaction than the one asked"),
    ("garbage", r"answered nonce {n} with no eip1559 transaction"),
    ("refuse", r"refused: policy: not now"),
    ("hang", r"did not answer within 0.5 s"),
    ("reset", rf"signer 0x{ADDRESS.hex()} failed: ConnectionResetError$"),
]


@pytest.mark.chain
def test_the_engine_broadcasts_only_what_its_own_signer_signed(
    anvil: AnvilProcess, service: SigningService, caplog: pytest.LogCaptureFixture
) -> None:
    """Each wrong answer: TxNotSigned (an AdapterError: the delivery loop's failed RPC),
    nothing broadcast, no hash recorded, the nonce kept; then the honest answer is sent with
    that very nonce. A replacement the signer refuses leaves the fees as they were, and says so
    once per transaction however often it is refused; a replacement carries the first
    broadcast's value. Every refusal counts in ``passerelle_signing_errors_total``."""
    call_sync(anvil.rpc_url, "anvil_setBalance", [to_hex(ADDRESS), hex(10**18)])
    signer = RemoteSigner(service, ADDRESS)
    assert isinstance(signer, Signer)
    recorded: list[bytes] = []

    async def record(sent: SentTx, tx_hash: bytes) -> None:
        recorded.append(tx_hash)

    async def scenario() -> None:
        async with CountingClient([anvil.rpc_url]) as client:
            engine = TxEngine(client, signer, CHAIN_ID, sign_timeout=0.5)
            start = await engine.sync_nonce()
            for mode, reason in ENGINE_REFUSALS:
                service.mode = mode
                began = time.monotonic()
                with pytest.raises(TxNotSigned, match=reason.format(n=start)) as refused:
                    await engine.send(RECIPIENT, b"", gas=21_000, value=1, before_broadcast=record)
                assert time.monotonic() - began < 5  # a hung signer costs its timeout
                assert isinstance(refused.value, AdapterError)
                assert one_line_without_secrets(str(refused.value))
            assert (client.raw_transactions, recorded) == ([], [])
            assert (engine.signing_errors, engine.broadcast_errors) == (len(ENGINE_REFUSALS), 0)
            assert pending_nonce(anvil, ADDRESS) == start

            service.mode, engine.sign_timeout = "honest", 30
            sent = await engine.send(
                RECIPIENT, b"\x01", gas=30_000, value=1, before_broadcast=record
            )
            mined = await engine.wait(sent, timeout=30)
            assert (sent.nonce, recorded, sent.hashes) == (start, [mined.hash], [mined.hash])
            [raw] = client.raw_transactions
            assert Account.recover_transaction(raw) == engine.checksum_address

            service.mode = "refuse"
            fees = (sent.max_fee, sent.priority_fee)
            with caplog.at_level(logging.WARNING, logger="passerelle.tx"):
                for _ in range(3):  # three escalations, one fee policy: one line
                    assert not await engine._replace(sent, record)
            assert (sent.max_fee, sent.priority_fee, len(client.raw_transactions)) == (*fees, 1)
            [line] = [r.getMessage() for r in caplog.records if r.name == "passerelle.tx"]
            assert f"nonce {start} stays at max fee {fees[0]}" in line and "policy" in line
            assert engine.signing_errors == len(ENGINE_REFUSALS) + 3
            assert signing_module.signer_health().errors == engine.signing_errors
            service.mode = "honest"  # signed and broadcast, then refused: the nonce is mined
            assert not await engine._replace(sent, record)
            assert len(client.raw_transactions) == 2  # the replacement did leave
            replacement = TypedTransaction.from_bytes(HexBytes(client.raw_transactions[-1]))
            assert replacement.as_dict()["nonce"] == sent.nonce
            assert replacement.as_dict()["value"] == 1  # the same payment, not 0

    trio.run(scenario)


# --------------------------------------------------------------------------- the attester

ATTESTER_REFUSALS = [
    ("other key", f"returned a signature of 0x{OTHER.hex()}"),
    ("garbage", "returned no valid signature"),
    ("refuse", "refused: policy: not now"),
    ("hang", "did not answer within 0.3 s"),
    ("reset", "failed: ConnectionResetError; trying again"),
]


def test_the_attester_publishes_only_its_own_signatures(
    tmp_path: Path,
    service: SigningService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each wrong answer costs one poll and one warning line, and publishes nothing; the next
    poll, with the signer answering, signs the same state with the same key."""
    monkeypatch.setattr(signing_module, "SIGN_TIMEOUT", 0.3)
    signer = RemoteSigner(service, ADDRESS)
    store = DirectoryCheckpointStore(tmp_path)
    state = AttesterState()
    progress = OriginProgress(last_index=-1, last_block=None)
    chain = ATTESTED_CHAIN

    async def poll() -> None:
        await attest_once(StatedOrigin(), chain, signer, store, state, progress=progress)

    for errors, (mode, reason) in enumerate(ATTESTER_REFUSALS, start=1):
        service.mode = mode
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="passerelle.attester"):
            trio.run(poll)
        assert (state.signatures, state.errors, progress.last_index) == (0, errors, -1)
        assert store.latest_own(chain.domain, chain.outbox_id, ADDRESS) is None
        [line] = [r.getMessage() for r in caplog.records]
        assert reason in line and "trying again at the next poll" in line
        assert one_line_without_secrets(line)

    monkeypatch.setattr(signing_module, "SIGN_TIMEOUT", 30.0)
    service.mode = "honest"
    trio.run(poll)
    assert (state.signatures, progress.last_index) == (1, 2)
    published = store.latest_own(chain.domain, chain.outbox_id, ADDRESS)
    assert published is not None and published.block_is_signed()
    assert recover_signer(published.checkpoint.digest(), published.signature) == ADDRESS


class RotatingSigner(RemoteSigner):
    """A remote signer whose address moves after it is first read: a KMS alias re-pointed to
    another key during a rotation. Its service signs with that other key from then on."""

    def __init__(self, service: SigningService, address: bytes) -> None:
        super().__init__(service, address)
        self.reads = 0

    @property
    def address(self) -> bytes:
        self.reads += 1
        if self.reads > 1:
            self._service.mode = "other key"
            return OTHER
        return ADDRESS


def test_the_attester_signs_only_as_the_address_it_started_with(
    tmp_path: Path,
    service: SigningService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The attester's signer, as ``run_attester`` builds it (``attester_signer``): its address
    is read once and checked against the committee; when the signer later says another address
    (and signs with that key) nothing is published, under either address, and one line says
    why."""
    rotating = RotatingSigner(service, ADDRESS)
    keys = ["the attester's key source"]
    monkeypatch.setattr(
        attester_module, "evm_signer", lambda source: rotating if source is keys[0] else None
    )
    config = SimpleNamespace(attester_keys=keys, committee=SimpleNamespace(members=(ADDRESS,)))
    signer = attester_module.attester_signer(cast(Config, config), 0)
    assert signer.address == ADDRESS
    store = DirectoryCheckpointStore(tmp_path)
    state = AttesterState()
    progress = OriginProgress(last_index=-1, last_block=None)
    with caplog.at_level(logging.WARNING, logger="passerelle.attester"):
        poll = partial(attest_once, StatedOrigin(), ATTESTED_CHAIN, signer, store, state)
        trio.run(partial(poll, progress=progress))
    [line] = [r.getMessage() for r in caplog.records]
    assert f"now says its address is 0x{OTHER.hex()}: not signing" in line
    assert (state.signatures, state.errors, progress.last_index) == (0, 1, -1)
    for member in (ADDRESS, OTHER):
        assert store.latest_own(ATTESTED_CHAIN.domain, ATTESTED_CHAIN.outbox_id, member) is None
    assert service.requests == []  # refused before the signer was asked


# --------------------------------------------------------------------------- user commands


@pytest.mark.chain
def test_send_and_send_tokens_sign_with_the_client_signer_and_trust_it_no_more(
    anvil: AnvilProcess, service: SigningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``passerelle send`` and token transfers (EVM) sign through the ``[client]`` signer that
    ``client_signer`` builds from the config's ``client_key`` (``evm_signer`` stands in for a
    remote one here), under the engine's checks: a signature by another key sends nothing."""
    call_sync(anvil.rpc_url, "anvil_setBalance", [to_hex(ADDRESS), hex(10**18)])
    client_key = "the client's key source"
    monkeypatch.setattr(
        user_evm,
        "evm_signer",
        lambda source: RemoteSigner(service, ADDRESS) if source is client_key else None,
    )
    config = cast(Config, SimpleNamespace(client_key=client_key))
    source = ChainConfig(
        name="alpha",
        domain=1,
        kind="evm",
        rpc=(anvil.rpc_url,),
        finality=FinalityPolicy("devnet-instant"),
        chain_id=CHAIN_ID,
        # No code at any of them: each call is mined, dispatching nothing.
        contracts={"outbox": b"\x0b" * 20, "token": b"\x70" * 20, "token_bridge": b"\xb0" * 20},
    )
    target = replace(source, name="beta", domain=2)
    send = partial(
        user_evm.send_messages, config, source, target, recipient=RECIPIENT, body=b"hi", count=1
    )
    send_tokens = partial(
        user_evm.send_tokens, config, source, target, amount=5, recipient=RECIPIENT
    )
    for command, transactions in ((send, 1), (send_tokens, 2)):  # tokens: approve, transfer
        start = pending_nonce(anvil, ADDRESS)
        service.mode, service.requests = "other key", []
        with pytest.raises(TxNotSigned, match=f"signed by 0x{OTHER.hex()}"):
            trio.run(command)
        assert pending_nonce(anvil, ADDRESS) == start
        service.mode = "honest"
        assert trio.run(command) == []
        assert pending_nonce(anvil, ADDRESS) == start + transactions
        assert service.requests == ["sign_transaction"] * (1 + transactions)


# --------------------------------------------------------------------------- no key bytes

KEY_BYTES = re.compile(r"\.load\(\)|Account\.from_key\(|private_key: bytes")
"""How code gets a secp256k1 private key as bytes: a KeySource's ``load()``, eth-account's
``Account.from_key``, a parameter taking one."""
HOLDERS = {
    "relayer/signer.py": "builds the signers from the key sources",
    "relayer/keys.py": "reads and writes key files and keystores",
    "relayer/config.py": "defines KeySource.load",
    "relayer/cli.py": "keys new/import handle key bytes to write a keystore, by nature",
}
SIGNING_MODULES = ("eth_account", "coincurve", "eth_keys", "ecdsa")
"""Libraries that sign with key bytes: importing one is how code would sign without a signer."""
SIGNING_FUNCTIONS = {"sign_digest", "sign_checkpoint"}
"""Our own primitives that take key bytes (light_clients.committee)."""
SIGNING_IMPORTERS = {
    "relayer/signer.py": "LocalSigner signs with its key (eth-account, committee.sign_digest)",
    "relayer/keys.py": "decrypts and writes V3 keystores (eth-account)",
    "relayer/cli.py": "keys new prints a new key's address (eth-account)",
    "light_clients/committee.py": "the signing primitive (coincurve): the key is its caller's",
    "devnet/evm.py": "deploys the devnet's contracts with the devnet's own public development "
    "keys (devnet.topology.DEPLOYER_KEY), never an operator's",
}


def _signing_imports(tree: ast.AST) -> list[str]:
    """Each import in ``tree`` of a signing library or primitive (aliases included: what is
    imported is checked, not what it is called)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [
            f"line {node.lineno}: {name}"
            for name in names
            if name.split(".")[0] in SIGNING_MODULES or name.rsplit(".", 1)[-1] in SIGNING_FUNCTIONS
        ]
    return found


def _python_files(folder: Path) -> list[Path]:
    """The Python files under ``folder``, not those of npm packages (devnet/npm-pos has some,
    in Python 2) nor of caches."""
    found = []
    for where, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(s for s in subfolders if s not in {"node_modules", "__pycache__"})
        found += [Path(where, name) for name in sorted(names) if name.endswith(".py")]
    return found


def test_no_code_outside_the_signer_holds_a_private_key() -> None:
    """After start-up, chain I/O and the relayer and attester hold signers, never keys: a
    remote signer (no key bytes anywhere) then fits everywhere. Two checks over the packages
    that ship: no line loads a key source or takes key bytes outside its holders, and no module
    imports something that signs with key bytes outside the few that must (each with its
    reason) — ``TxEngine`` signing with ``Account.sign_transaction(tx, key)`` again would fail
    here, under any alias."""
    root = Path(__file__).resolve().parents[1]
    texts = {
        str(path.relative_to(root)): path.read_text()
        for package in ("adapters", "relayer", "devnet", "light_clients")
        for path in _python_files(root / package)
    }
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        if not name.startswith("light_clients/") and name not in HOLDERS
        for number, line in enumerate(text.splitlines(), start=1)
        if KEY_BYTES.search(line)
    ]
    assert found == []
    mentions = (*SIGNING_MODULES, *SIGNING_FUNCTIONS)
    importers = {
        name: imports
        for name, text in texts.items()
        # Parsing only what names one of them at all: the check's cost is the parsing.
        if any(mention in text for mention in mentions)
        and (imports := _signing_imports(ast.parse(text)))
    }
    # Equal, not a subset: an entry no longer needed goes (and the detector is seen to work).
    assert sorted(importers) == sorted(SIGNING_IMPORTERS), importers
