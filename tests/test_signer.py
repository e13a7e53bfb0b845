"""relayer/signer.py: the signer interface, its local implementations, the Keypair seam the
Substrate adapters sign through, and (on a real Asset Hub) a keystore-held sr25519 key opening
and executing a committee multisig operation through that seam."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import running_chopsticks
from eth_account import Account
from scalecodec.base import ScaleBytes
from substrateinterface import Keypair
from test_config import KEYS, toml
from test_keys_sr25519 import KEYPAIR, KEYSTORE, PASSWORD, attester_config

import adapters.signing
from adapters.signing import signer_health
from adapters.substrate.client import SubstrateClient, account_bytes, keypair_from_seed
from adapters.substrate.multisig import approve, execute, executed_ok, multisig_account
from devnet.chopsticks import DEV_BALANCE, ChopsticksProcess
from light_clients.committee import address_of, recover_signer, sign_digest
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from relayer.config import ConfigError, KeySource, load_config
from relayer.keys import write_secret
from relayer.signer import (
    LocalSigner,
    LocalSubstrateSigner,
    Signer,
    SignerError,
    SubstrateSigner,
    as_keypair,
    client_substrate_signer,
    evm_signer,
    sign_digest_checked,
    substrate_signer,
)

DIGEST = keccak256(b"a checkpoint digest")
TX: dict[str, Any] = {
    "type": 2,
    "chainId": 31337,
    "nonce": 7,
    "to": "0x" + "22" * 20,
    "value": 1,
    "gas": 21_000,
    "maxFeePerGas": 2 * 10**9,
    "maxPriorityFeePerGas": 10**9,
    "data": "0x",
}
BOB = Keypair.create_from_uri("//Bob")


# --- secp256k1 -----------------------------------------------------------------------------


def test_a_local_signer_signs_digests_and_transactions_as_its_address() -> None:
    signer = LocalSigner(KEYS[1])
    assert isinstance(signer, Signer)
    assert signer.address == address_of(KEYS[1])
    signature = signer.sign_digest(DIGEST)
    # Byte for byte what the committee code signed before the interface existed.
    assert signature == sign_digest(KEYS[1], DIGEST)
    assert recover_signer(DIGEST, signature) == signer.address
    raw = signer.sign_transaction(TX)
    assert Account.recover_transaction(raw) == Account.from_key(KEYS[1]).address
    assert KEYS[1].hex() not in repr(signer)
    with pytest.raises(ValueError, match="a digest is 32 bytes, got 31"):
        signer.sign_digest(DIGEST[:31])
    with pytest.raises(ValueError, match="32 bytes, got 31"):
        LocalSigner(KEYS[1][:31])


class _Lying:
    """A signer (say, a remote one misconfigured) whose signatures are not its address's."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.address = address_of(KEYS[1])

    def sign_digest(self, digest: bytes) -> bytes:
        return self.answer

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        raise SignerError("not signing transactions")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (sign_digest(KEYS[2], DIGEST), "returned a signature of 0x" + address_of(KEYS[2]).hex()),
        (b"\x01" * 65, "returned no valid signature"),
        (b"", "returned no valid signature"),
    ],
)
def test_a_signature_not_by_the_signers_own_key_is_caught_before_use(
    answer: bytes, reason: str
) -> None:
    signer = _Lying(answer)
    assert isinstance(signer, Signer)
    with pytest.raises(SignerError, match=reason) as caught:
        sign_digest_checked(signer, DIGEST)
    assert "\n" not in str(caught.value)
    assert sign_digest_checked(LocalSigner(KEYS[1]), DIGEST) == sign_digest(KEYS[1], DIGEST)


def test_signers_are_built_from_the_configuration_in_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSRL_RELAYER_KEY", "0x" + KEYS[0].hex())
    path = tmp_path / "passerelle.toml"
    path.write_text(toml(devnet=False, relayer='key_env = "PSRL_RELAYER_KEY"'))
    config = load_config(path)
    assert config.relayer_key is not None
    assert evm_signer(config.relayer_key).address == address_of(KEYS[0])
    with pytest.raises(ConfigError, match="an sr25519 key cannot sign as a secp256k1"):
        evm_signer(KeySource(inline=KEYS[0], sr25519=True))


# --- sr25519 and the Keypair seam ----------------------------------------------------------


class _Counting:
    """A SubstrateSigner that is not a Keypair (as a remote one would be): counts its use."""

    def __init__(self, inner: LocalSubstrateSigner, answer: bytes | None = None) -> None:
        self.inner, self.answer = inner, answer
        self.signed: list[bytes] = []
        self.public_key, self.ss58_address = inner.public_key, inner.ss58_address

    def sign(self, payload: bytes) -> bytes:
        self.signed.append(payload)
        return self.answer if self.answer is not None else self.inner.sign(payload)


def test_any_substrate_signer_fits_the_keypair_the_adapters_sign_with() -> None:
    local = LocalSubstrateSigner(KEYPAIR)
    counting = _Counting(local)
    assert isinstance(local, SubstrateSigner) and isinstance(counting, SubstrateSigner)
    keypair = as_keypair(counting)
    assert isinstance(keypair, Keypair)
    assert keypair.private_key is None  # nothing secret to read through the seam
    assert keypair.public_key == KEYPAIR.public_key
    assert keypair.ss58_address == KEYPAIR.ss58_address
    # The three shapes substrate-interface passes to Keypair.sign, all signing the same bytes.
    for data in (b"payload", ScaleBytes(b"payload"), "0x" + b"payload".hex()):
        assert KEYPAIR.verify(b"payload", keypair.sign(data))
    assert counting.signed == [b"payload"] * 3
    assert KEYPAIR.verify(b"text", keypair.sign("text"))
    # What it answers is checked by its caller, off the Substrate worker slot
    # (tests/test_signer_sr25519_bound.py); the client reads the signer behind it from here.
    assert keypair.signer is counting
    assert str(KEYPAIR.private_key.hex()) not in repr(keypair)


def test_substrate_signers_from_a_seed_a_keystore_and_a_devnet_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = keccak256(b"a seed")
    assert substrate_signer(KeySource(inline=seed, sr25519=True)).public_key == bytes(
        keypair_from_seed(seed).public_key
    )
    write_secret(tmp_path / "sr.json", KEYSTORE)
    write_secret(tmp_path / "pw", PASSWORD)
    source = KeySource(keystore=tmp_path / "sr.json", password_file=tmp_path / "pw", sr25519=True)
    assert substrate_signer(source).ss58_address == KEYPAIR.ss58_address
    path = tmp_path / "client.toml"
    path.write_text(toml() + f'\n[client]\nkey = "0x{KEYS[2].hex()}"\nsubstrate_uri = "//Bob"\n')
    assert client_substrate_signer(load_config(path)).public_key == bytes(BOB.public_key)
    path.write_text(toml() + f'\n[client]\nkey = "0x{KEYS[2].hex()}"\n')
    with pytest.raises(ConfigError, match=r"no \[client\] substrate_key configured"):
        client_substrate_signer(load_config(path))


# --- on a real Asset Hub ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> Iterator[ChopsticksProcess]:
    """Chopsticks with the keystore's account and //Bob funded (the approval's deposit)."""
    yield from running_chopsticks(
        {to_hex(bytes(KEYPAIR.public_key)): DEV_BALANCE, to_hex(bytes(BOB.public_key)): DEV_BALANCE}
    )


@pytest.mark.chain
def test_a_keystore_key_approves_a_committee_multisig_operation_on_asset_hub(
    chain: ChopsticksProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an attester does for a delivery to Asset Hub, with its sr25519 key in a Polkadot
    JS keystore and loaded as approval.py loads it (config → substrate_signer → as_keypair):
    it opens a 2-of-2 operation, //Bob executes it, and the call runs as the multisig."""
    write_secret(tmp_path / "sr.json", KEYSTORE)
    monkeypatch.setenv("PSRL_SR_PW", PASSWORD)
    keystore = 'substrate_key_keystore = "sr.json"\nsubstrate_key_password_env = "PSRL_SR_PW"'
    config = load_config(attester_config(tmp_path, keystore))
    [source] = config.attester_substrate_keys
    assert source is not None
    counting = _Counting(substrate_signer(source))
    attester = as_keypair(counting)
    me, bob = bytes(KEYPAIR.public_key), bytes(BOB.public_key)
    multisig = multisig_account(sorted([me, bob]), 2)
    remark = b"delivered through a keystore"

    async def scenario() -> tuple[bool, str | None, list[Any]]:
        client = SubstrateClient(chain.ws_url)
        await client.connect()
        try:
            call = await client.compose("System", "remark_with_event", {"remark": remark})
            opened = await approve(client, attester, [bob], 2, call)
            done = await execute(client, BOB, [me], 2, call, timepoint=opened)
        finally:
            await client.aclose()
        ok, reason = executed_ok(done)
        return ok, reason, list(done.named("System", "Remarked"))

    ok, reason, remarked = trio.run(scenario)
    assert ok, reason
    assert [account_bytes(e.attributes["sender"]) for e in remarked] == [multisig]
    assert counting.signed  # the approval was signed through the interface, not around it


class _Misbehaving:
    """//Bob's account behind a remote-like signer (called in a thread) that hangs until
    ``release`` is set (if given), then answers with ``signs_as``'s signature of the payload.
    ``inside`` is set while it is in :meth:`sign`."""

    def __init__(self, *, release: threading.Event | None = None, signs_as: Keypair = BOB) -> None:
        self.release, self.signs_as = release, signs_as
        self.public_key, self.ss58_address = bytes(BOB.public_key), BOB.ss58_address
        self.calls = 0
        self.inside = threading.Event()

    def sign(self, payload: bytes) -> bytes:
        self.calls += 1
        self.inside.set()
        try:
            if self.release is not None:
                self.release.wait(60)  # a signer that ignores every timeout but ours
            return bytes(self.signs_as.sign(payload))
        finally:
            self.inside.clear()


@pytest.mark.chain
def test_a_hanging_or_lying_sr25519_signer_spends_no_nonce_and_holds_no_substrate_slot(
    chain: ChopsticksProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote sr25519 signer that hangs is cut off after SIGN_TIMEOUT while every other
    Substrate call of the process goes on (it is asked outside SUBSTRATE_LIMITER); one that
    answers with another key's signature is refused before submission. Neither spends //Bob's
    nonce. (On the old code the hang held the one worker slot and the lie reached the chain.)"""
    monkeypatch.setattr(adapters.signing, "SIGN_TIMEOUT", 1.0)
    release = threading.Event()
    hanging, lying = _Misbehaving(release=release), _Misbehaving(signs_as=KEYPAIR)
    bob = bytes(BOB.public_key)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        client = SubstrateClient(chain.ws_url)
        await client.connect()
        try:
            seen["before"] = await client.account_next_index(bob)

            async def submit(signer: _Misbehaving, name: str) -> None:
                try:
                    await client.submit(
                        as_keypair(signer),
                        "System",
                        "remark",
                        {"remark": name.encode()},
                        wait_for_inclusion=False,
                    )
                    seen[name] = "submitted"
                except SignerError as exc:
                    seen[name] = str(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit, hanging, "hang")
                with trio.fail_after(20):
                    while not hanging.calls:
                        await trio.sleep(0.01)
                # Ordering, not timing: another Substrate call completes while the signer is
                # still inside ``sign`` (it stays there until released, below). The bound only
                # turns a deadlock (the old code: the hang held the one worker slot) into a
                # failure instead of a hung test.
                with trio.fail_after(30):
                    await client.best_number()
                seen["signer still inside after the other call"] = hanging.inside.is_set()
            release.set()  # submit gave up after SIGN_TIMEOUT; the thread may return now
            await submit(lying, "lie")
            seen["after"] = await client.account_next_index(bob)
            with trio.fail_after(10):  # the hung thread returns; its late answer is dropped
                while signer_health().stuck:
                    await trio.sleep(0.05)
        finally:
            release.set()
            await client.aclose()
        return seen

    seen = trio.run(scenario)
    assert seen["signer still inside after the other call"] is True, seen  # the slot was free
    assert seen["hang"] == f"signer 0x{bob.hex()} did not answer within 1 s", seen
    assert "does not verify under its own key" in seen["lie"], seen
    assert seen["after"] == seen["before"], seen  # nothing was submitted
