"""A real Substrate runtime (Rococo Asset Hub's genesis runtime) under chopsticks.

One chopsticks process (the devnet's ``Collator`` block mode: what is pending when a build
starts goes into that block, what does not fit waits for the next) serves the whole module and is
stopped in the fixture's ``finally``. The tests pin what issue 4 builds on: real sr25519
signatures, ``System.remark_with_event`` and its ``Remarked {sender, hash}`` event,
``Utility.batch_all`` (atomic), ``Assets``, ``Uniques`` as the replay guard, the
``pallet_multisig`` flow (``approve_as_multi`` then ``as_multi`` with the timepoint of the first
approval) and block hash = blake2-256 of the SCALE header. Accounts are funded through
chopsticks' ``import-storage``, so nothing here depends on the order the tests run in.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import running_chopsticks
from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.base import ExtrinsicReceipt
from substrateinterface.exceptions import SubstrateRequestException

from adapters.jsonrpc import request
from adapters.substrate.metadata import SharedMetadataInterface
from devnet.chopsticks import (
    ALICE,
    CHAIN_NAME,
    DEV_BALANCE,
    EXISTENTIAL_DEPOSIT,
    FINALITY_POLICY,
    GENESIS_HASH,
    HOST,
    SS58_FORMAT,
    ChopsticksError,
    ChopsticksProcess,
    account_id,
    start_chopsticks,
)
from light_clients.hashing import blake2_256
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.header import decode_header, header_hash
from light_clients.substrate.scale import encode_compact

pytestmark = pytest.mark.chain

ALICE_KEY = Keypair.create_from_uri("//Alice")
BOB_KEY = Keypair.create_from_uri("//Bob")
CHARLIE_KEY = Keypair.create_from_uri("//Charlie")
DAVE_KEY = Keypair.create_from_uri("//Dave")
EVE_KEY = Keypair.create_from_uri("//Eve")
FERDIE_KEY = Keypair.create_from_uri("//Ferdie")
REVERSED_KEY = Keypair.create_from_uri("//Reversed")
ZERO_HASH = "0x" + "00" * 32

# Runtime constants of this runtime (statemine spec 900), in planck.
ASSET_DEPOSIT = 10**12
CLASS_DEPOSIT = 10**12
INSTANCE_DEPOSIT = 10**10
MULTISIG_DEPOSIT_BASE = 6_695_999_640
MULTISIG_DEPOSIT_FACTOR = 10_666_560
# pallet_uniques (index 51) Error::AlreadyExists (2); a module error carries 4 error bytes.
ALREADY_EXISTS = {"Module": {"index": 51, "error": "0x" + (2).to_bytes(4, "little").hex()}}


def multisig_account(signatories: list[bytes], threshold: int) -> bytes:
    """pallet_multisig's account id.

    blake2-256("modlpy/utilisuba" ‖ Compact(n) ‖ sorted signers ‖ u16 LE threshold).
    """
    ordered = sorted(signatories)
    return blake2_256(
        b"modlpy/utilisuba"
        + encode_compact(len(ordered))
        + b"".join(ordered)
        + threshold.to_bytes(2, "little")
    )


MULTISIG = multisig_account(
    [ALICE_KEY.public_key, BOB_KEY.public_key, CHARLIE_KEY.public_key], threshold=2
)
MULTISIG_HEX = to_hex(MULTISIG)


def hex_of(keypair: Keypair) -> str:
    """The account id of ``keypair`` as 0x-hex (what compose_call takes for an account)."""
    public: bytes = keypair.public_key
    return to_hex(public)


@pytest.fixture(scope="module")
def chain() -> Iterator[ChopsticksProcess]:
    """One chopsticks for the module, always stopped; //Alice, //Bob, //Charlie and their
    2-of-3 multisig account are funded through import-storage."""
    yield from running_chopsticks(
        {
            ALICE: DEV_BALANCE,
            BOB_KEY.ss58_address: DEV_BALANCE,  # SS58 (prefix 42) works as a key too
            hex_of(CHARLIE_KEY): DEV_BALANCE,
            MULTISIG_HEX: DEV_BALANCE,
            hex_of(DAVE_KEY): DEV_BALANCE,  # the block-building tests' own accounts
            hex_of(EVE_KEY): DEV_BALANCE,
            hex_of(FERDIE_KEY): DEV_BALANCE,
            hex_of(REVERSED_KEY): DEV_BALANCE,
        }
    )


@pytest.fixture(scope="module")
def substrate(chain: ChopsticksProcess) -> Iterator[SubstrateInterface]:
    """substrate-interface over WebSocket, as the Substrate adapter uses it (its metadata
    decode shared with the adapter's clients in this process: adapters/substrate/metadata.py)."""
    interface = SharedMetadataInterface(url=chain.ws_url)
    interface.init_runtime()  # sets ss58_format from System.SS58Prefix
    try:
        yield interface
    finally:
        interface.close()


def rpc(chain: ChopsticksProcess, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    """One plain-HTTP JSON-RPC request; the whole answer (``result`` or ``error``)."""
    body = json.dumps(request(method, params or []))
    http_request = urllib.request.Request(
        chain.http_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http_request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def submit(substrate: SubstrateInterface, signer: Keypair, call: Any) -> ExtrinsicReceipt:
    """Sign (immortal era), submit and wait for inclusion (alone: in a block of its own)."""
    extrinsic = substrate.create_signed_extrinsic(call=call, keypair=signer)
    return substrate.submit_extrinsic(extrinsic, wait_for_inclusion=True)


def events(receipt: ExtrinsicReceipt) -> list[tuple[str, str, Any]]:
    """(pallet, event, attributes) of every event the extrinsic triggered, in order."""
    return [
        (e.value["module_id"], e.value["event_id"], e.value["attributes"])
        for e in receipt.triggered_events
    ]


def named(receipt: ExtrinsicReceipt, pallet: str, event: str) -> list[Any]:
    """The attributes of each ``pallet.event`` the extrinsic triggered."""
    return [attrs for p, e, attrs in events(receipt) if (p, e) == (pallet, event)]


def free_balance(substrate: SubstrateInterface, account: str) -> int:
    """``System.Account[account].data.free``."""
    return int(substrate.query("System", "Account", [account]).value["data"]["free"])


def timepoint(substrate: SubstrateInterface, receipt: ExtrinsicReceipt) -> dict[str, int]:
    """The multisig timepoint of an extrinsic: its block number and index in the block."""
    return {
        "height": substrate.get_block_number(receipt.block_hash),
        "index": receipt.extrinsic_idx,
    }


# --- RPC surface ---------------------------------------------------------------------------


def test_rpc_surface_over_http(chain: ChopsticksProcess) -> None:
    assert chain.finality_policy == FINALITY_POLICY == "devnet-instant"
    assert chain.ws_url == f"ws://{HOST}:{chain.port}"
    assert rpc(chain, "system_chain")["result"] == CHAIN_NAME
    assert rpc(chain, "system_properties")["result"] == {"tokenDecimals": 12, "tokenSymbol": "ROC"}
    version = rpc(chain, "state_getRuntimeVersion")["result"]
    assert (version["specName"], version["specVersion"], version["transactionVersion"]) == (
        "statemine",
        900,
        6,
    )
    methods = set(rpc(chain, "rpc_methods")["result"]["methods"])
    needed = {
        "chain_getHeader",
        "chain_getBlock",
        "chain_getBlockHash",
        "chain_getFinalizedHead",
        "chain_subscribeFinalizedHeads",
        "state_getStorage",
        "state_getKeysPaged",
        "state_queryStorageAt",
        "state_getMetadata",
        "author_submitExtrinsic",
        "author_submitAndWatchExtrinsic",
        "payment_queryInfo",
        "system_accountNextIndex",
    }
    assert needed <= methods
    assert "grandpa_proveFinality" not in methods
    # Listed, but there is no upstream node to ask for a proof.
    assert "state_getReadProof" in methods
    proof = rpc(chain, "state_getReadProof", [[ZERO_HASH]])
    assert "state_getReadProof not implemented" in proof["error"]["message"]
    assert rpc(chain, "grandpa_proveFinality", [1])["error"] == {
        "message": "Method not found: grandpa_proveFinality"
    }
    # Every block is final at once; state roots are not computed.
    best = rpc(chain, "chain_getBlockHash")["result"]
    assert rpc(chain, "chain_getFinalizedHead")["result"] == best
    assert rpc(chain, "chain_getHeader", [best])["result"]["stateRoot"] == ZERO_HASH
    assert rpc(chain, "chain_getBlockHash", [0])["result"] == GENESIS_HASH
    # Storage reads and key paging work (System.Account prefix).
    prefix = "0x26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9"
    keys = rpc(chain, "state_getKeysPaged", [prefix, 100])["result"]
    assert any(key.endswith(ALICE[2:]) for key in keys)
    assert rpc(chain, "system_accountNextIndex", [ALICE])["result"] >= 0


def test_accounts_are_funded_through_import_storage(substrate: SubstrateInterface) -> None:
    assert substrate.ss58_format == SS58_FORMAT
    for account in (ALICE, hex_of(BOB_KEY), hex_of(CHARLIE_KEY), MULTISIG_HEX):
        # Others' fees may have been paid already; the funding is what is asserted.
        assert DEV_BALANCE - 10**12 < free_balance(substrate, account) <= DEV_BALANCE
    multisig = substrate.generate_multisig_account(
        [hex_of(k) for k in (ALICE_KEY, BOB_KEY, CHARLIE_KEY)], 2
    )
    assert multisig.value == MULTISIG_HEX


# --- extrinsics ----------------------------------------------------------------------------


def test_signatures_are_verified(substrate: SubstrateInterface) -> None:
    call = substrate.compose_call("System", "remark", {"remark": b"unsigned"})
    forged = substrate.create_signed_extrinsic(call=call, keypair=ALICE_KEY, signature=b"\x01" * 64)
    with pytest.raises(SubstrateRequestException) as refused:
        substrate.submit_extrinsic(forged, wait_for_inclusion=True)
    assert refused.value.args[0] == {"code": 1010, "message": '{"invalid":{"badProof":null}}'}


def test_remark_with_event_emits_remarked(substrate: SubstrateInterface) -> None:
    remark = b"PSRL" + bytes.fromhex("01000000000000000100") + b"hello, asset hub"
    call = substrate.compose_call("System", "remark_with_event", {"remark": remark})
    fee = substrate.get_payment_info(call, ALICE_KEY)  # payment_queryInfo
    assert fee["partialFee"] > 0 and fee["weight"] > 0
    receipt = submit(substrate, ALICE_KEY, call)
    assert receipt.is_success, receipt.error_message
    [remarked] = named(receipt, "System", "Remarked")
    assert account_id(remarked["sender"]) == ALICE
    assert remarked["hash"] == to_hex(blake2_256(remark))
    # The same event read back from System.Events of that block, with its extrinsic index.
    stored = [
        e.value
        for e in substrate.get_events(receipt.block_hash)
        if (e.value["module_id"], e.value["event_id"]) == ("System", "Remarked")
    ]
    assert [(e["extrinsic_idx"], e["attributes"]["hash"]) for e in stored] == [
        (receipt.extrinsic_idx, remarked["hash"])
    ]
    # Extrinsic 0 and 1 of every block are the inherents (set_validation_data, timestamp).
    assert receipt.extrinsic_idx == 2
    block = substrate.get_block(receipt.block_hash)
    included = block["extrinsics"][receipt.extrinsic_idx]
    assert to_hex(included.extrinsic_hash) == receipt.extrinsic_hash


def test_batch_all_runs_every_call_or_none(substrate: SubstrateInterface) -> None:
    bob_before = free_balance(substrate, hex_of(BOB_KEY))
    batch = substrate.compose_call(
        "Utility",
        "batch_all",
        {
            "calls": [
                substrate.compose_call("System", "remark_with_event", {"remark": b"PSRL batch"}),
                substrate.compose_call(
                    "Balances", "transfer", {"dest": hex_of(BOB_KEY), "value": 12345}
                ),
            ]
        },
    )
    receipt = submit(substrate, ALICE_KEY, batch)
    assert receipt.is_success, receipt.error_message
    assert len(named(receipt, "Utility", "ItemCompleted")) == 2
    assert named(receipt, "Utility", "BatchCompleted") == [None]
    assert len(named(receipt, "System", "Remarked")) == 1
    assert free_balance(substrate, hex_of(BOB_KEY)) == bob_before + 12345


def test_assets_create_and_mint(substrate: SubstrateInterface) -> None:
    asset_id = 1984
    create_and_mint = substrate.compose_call(
        "Utility",
        "batch_all",
        {
            "calls": [
                substrate.compose_call(
                    "Assets", "create", {"id": asset_id, "admin": ALICE, "min_balance": 1}
                ),
                substrate.compose_call(
                    "Assets",
                    "mint",
                    {"id": asset_id, "beneficiary": hex_of(BOB_KEY), "amount": 10**6},
                ),
            ]
        },
    )
    receipt = submit(substrate, ALICE_KEY, create_and_mint)
    assert receipt.is_success, receipt.error_message
    # The creator reserves AssetDeposit (1 ROC), whatever min_balance is.
    assert substrate.get_constant("Assets", "AssetDeposit").value == ASSET_DEPOSIT
    assert [r["amount"] for r in named(receipt, "Balances", "Reserved")] == [ASSET_DEPOSIT]
    [created] = named(receipt, "Assets", "Created")
    assert created["asset_id"] == asset_id and account_id(created["owner"]) == ALICE
    [issued] = named(receipt, "Assets", "Issued")
    assert issued["total_supply"] == 10**6
    balance = substrate.query("Assets", "Account", [asset_id, hex_of(BOB_KEY)]).value
    assert balance["balance"] == 10**6
    assert substrate.query("Assets", "Asset", [asset_id]).value["supply"] == 10**6


def test_uniques_refuses_a_second_mint_of_the_same_item(substrate: SubstrateInterface) -> None:
    collection, item = 7, 42
    mint = substrate.compose_call(
        "Uniques", "mint", {"class": collection, "instance": item, "owner": ALICE}
    )
    create = substrate.compose_call("Uniques", "create", {"class": collection, "admin": ALICE})
    first = submit(
        substrate,
        ALICE_KEY,
        substrate.compose_call("Utility", "batch_all", {"calls": [create, mint]}),
    )
    assert first.is_success, first.error_message
    # ClassDeposit (1 ROC) for the collection, InstanceDeposit (0.01 ROC) per item.
    assert [r["amount"] for r in named(first, "Balances", "Reserved")] == [
        CLASS_DEPOSIT,
        INSTANCE_DEPOSIT,
    ]
    assert named(first, "Uniques", "Issued")[0]["instance"] == item

    second = submit(substrate, ALICE_KEY, mint)
    assert not second.is_success
    assert second.error_message["name"] == "AlreadyExists"
    [failed] = named(second, "System", "ExtrinsicFailed")
    assert failed["dispatch_error"] == ALREADY_EXISTS


def run_multisig(
    substrate: SubstrateInterface, call: Any, *, first: Keypair, last: Keypair
) -> ExtrinsicReceipt:
    """2-of-3: ``first`` approves the call hash, ``last`` executes with the call itself.

    ``approve_as_multi`` opens the operation (max_weight 0 is fine: only the executing approval
    is weighed) and reserves DepositBase + 2 * DepositFactor from ``first``; ``as_multi`` must
    carry the timepoint (block number, extrinsic index) of that first approval, the other
    signatories sorted, the call (``OpaqueCall``: substrate-interface takes the GenericCall)
    and a u64 ``max_weight`` at least the call's weight.
    """
    everyone = [ALICE_KEY, BOB_KEY, CHARLIE_KEY]

    def others(me: Keypair) -> list[str]:
        return sorted(hex_of(k) for k in everyone if k is not me)

    approve = substrate.compose_call(
        "Multisig",
        "approve_as_multi",
        {
            "threshold": 2,
            "other_signatories": others(first),
            "maybe_timepoint": None,
            "call_hash": call.call_hash,
            "max_weight": 0,
        },
    )
    opened = submit(substrate, first, approve)
    assert opened.is_success, opened.error_message
    [new] = named(opened, "Multisig", "NewMultisig")
    assert account_id(new["multisig"]) == MULTISIG_HEX
    assert new["call_hash"] == to_hex(call.call_hash)
    assert named(opened, "Balances", "Reserved")[0]["amount"] == (
        MULTISIG_DEPOSIT_BASE + 2 * MULTISIG_DEPOSIT_FACTOR
    )
    when = timepoint(substrate, opened)
    pending = substrate.query("Multisig", "Multisigs", [MULTISIG_HEX, call.call_hash]).value
    assert pending["when"] == when

    weight = substrate.get_payment_info(call, last)["weight"]  # u64 on this runtime
    execute = substrate.compose_call(
        "Multisig",
        "as_multi",
        {
            "threshold": 2,
            "other_signatories": others(last),
            "maybe_timepoint": when,
            "call": call,
            "store_call": False,
            "max_weight": weight,
        },
    )
    executed = submit(substrate, last, execute)
    # The outer extrinsic succeeds even when the inner call fails: read MultisigExecuted.
    assert executed.is_success, executed.error_message
    [done] = named(executed, "Multisig", "MultisigExecuted")
    assert done["timepoint"] == when
    assert account_id(done["multisig"]) == MULTISIG_HEX
    assert substrate.query("Multisig", "Multisigs", [MULTISIG_HEX, call.call_hash]).value is None
    return executed


def test_multisig_delivers_once_and_a_replay_fails_on_chain(
    substrate: SubstrateInterface,
) -> None:
    collection, asset_id, nonce, amount = 1000, 2000, 5, 7 * 10**6
    # The multisig creates the replay-guard collection and the wrapped asset itself, so it is
    # owner, admin and sole issuer of both: nobody else can mint (or set_team and then mint)
    # an item to jam a delivery, or mint wrapped tokens. It pays ClassDeposit + AssetDeposit.
    setup = substrate.compose_call(
        "Utility",
        "batch_all",
        {
            "calls": [
                substrate.compose_call(
                    "Uniques", "create", {"class": collection, "admin": MULTISIG_HEX}
                ),
                substrate.compose_call(
                    "Assets", "create", {"id": asset_id, "admin": MULTISIG_HEX, "min_balance": 1}
                ),
            ]
        },
    )
    created = run_multisig(substrate, setup, first=ALICE_KEY, last=BOB_KEY)
    assert named(created, "Multisig", "MultisigExecuted")[0]["result"] == {"Ok": ()}
    reserved = [
        r["amount"]
        for r in named(created, "Balances", "Reserved")
        if account_id(r["who"]) == MULTISIG_HEX
    ]
    assert reserved == [CLASS_DEPOSIT, ASSET_DEPOSIT]
    guard = substrate.query("Uniques", "Class", [collection]).value
    wrapped = substrate.query("Assets", "Asset", [asset_id]).value
    assert {account_id(guard[role]) for role in ("owner", "issuer", "admin", "freezer")} == {
        MULTISIG_HEX
    }
    assert {account_id(wrapped[role]) for role in ("owner", "issuer", "admin", "freezer")} == {
        MULTISIG_HEX
    }

    # A delivery as the inbox makes it: the replay guard first, then the delivery itself.
    delivery = substrate.compose_call(
        "Utility",
        "batch_all",
        {
            "calls": [
                substrate.compose_call(
                    "Uniques",
                    "mint",
                    {"class": collection, "instance": nonce, "owner": MULTISIG_HEX},
                ),
                substrate.compose_call(
                    "Assets",
                    "mint",
                    {"id": asset_id, "beneficiary": hex_of(BOB_KEY), "amount": amount},
                ),
                substrate.compose_call("System", "remark_with_event", {"remark": b"delivered 5"}),
            ]
        },
    )
    delivered = run_multisig(substrate, delivery, first=ALICE_KEY, last=CHARLIE_KEY)
    assert named(delivered, "Multisig", "MultisigExecuted")[0]["result"] == {"Ok": ()}
    assert len(named(delivered, "System", "Remarked")) == 1
    item = substrate.query("Uniques", "Asset", [collection, nonce]).value
    assert account_id(item["owner"]) == MULTISIG_HEX
    bob = substrate.query("Assets", "Account", [asset_id, hex_of(BOB_KEY)]).value
    assert bob["balance"] == amount

    # The same delivery again: the outer extrinsic succeeds, the multisig call fails.
    replay = run_multisig(substrate, delivery, first=ALICE_KEY, last=BOB_KEY)
    [result] = [e["result"] for e in named(replay, "Multisig", "MultisigExecuted")]
    assert result == {"Err": ALREADY_EXISTS}
    # batch_all: the rest of the delivery is undone too.
    assert named(replay, "System", "Remarked") == []
    assert named(replay, "Assets", "Issued") == []
    bob = substrate.query("Assets", "Account", [asset_id, hex_of(BOB_KEY)]).value
    assert bob["balance"] == amount


# --- headers -------------------------------------------------------------------------------


def scale_header(header: dict[str, Any]) -> bytes:
    """SCALE bytes of a JSON header as chopsticks returns it (digest logs are SCALE hex)."""
    logs = [parse_data(log, "log") for log in header["digest"]["logs"]]
    return (
        parse_data(header["parentHash"], "parentHash")
        + encode_compact(int(header["number"], 16))
        + parse_data(header["stateRoot"], "stateRoot")
        + parse_data(header["extrinsicsRoot"], "extrinsicsRoot")
        + encode_compact(len(logs))
        + b"".join(logs)
    )


def test_block_hash_is_blake2_of_the_scale_header(
    chain: ChopsticksProcess, substrate: SubstrateInterface
) -> None:
    best = int(substrate.get_block_header()["header"]["number"])
    assert best >= 2
    parent = GENESIS_HASH
    for number in range(1, best + 1):
        block_hash = substrate.get_block_hash(number)
        header = rpc(chain, "chain_getHeader", [block_hash])["result"]
        raw = scale_header(header)
        decoded = decode_header(raw)
        assert to_hex(header_hash(raw)) == block_hash
        assert to_hex(decoded.hash) == block_hash
        assert decoded.number == number
        assert to_hex(decoded.parent_hash) == parent
        assert decoded.state_root == bytes(32)  # chopsticks does not compute state roots
        assert [(item.kind.name, item.engine) for item in decoded.digest] == [
            ("PRE_RUNTIME", b"aura")
        ]
        parent = block_hash
    # Block 0 is a placeholder: its hash is not the hash of the header chopsticks serves.
    genesis = rpc(chain, "chain_getHeader", [GENESIS_HASH])["result"]
    assert "0x" + header_hash(scale_header(genesis)).hex() != GENESIS_HASH


# --- start_chopsticks argument checks (no process is started) ------------------------------


def test_start_refuses_bad_arguments_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ChopsticksError, match="block mode"):
        start_chopsticks(block_mode="Sometimes", state_dir=tmp_path)
    with pytest.raises(ChopsticksError, match="existential deposit"):
        start_chopsticks(funded={ALICE: EXISTENTIAL_DEPOSIT - 1}, state_dir=tmp_path)
    with pytest.raises(ChopsticksError, match="same account"):
        start_chopsticks(funded={ALICE: DEV_BALANCE, ALICE_KEY.ss58_address: 1}, state_dir=tmp_path)
    with pytest.raises(ChopsticksError, match="SS58"):
        start_chopsticks(funded={"not-an-address": DEV_BALANCE}, state_dir=tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((HOST, 0))
        busy.listen()
        with pytest.raises(ChopsticksError, match="busy"):
            start_chopsticks(port=busy.getsockname()[1], state_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- block building (the devnet's Collator mode, devnet/collator.cjs) ----------------------


def blocks_of(
    substrate: SubstrateInterface, hashes: list[bytes], after: int, timeout: float = 60.0
) -> list[int]:
    """The block number each extrinsic landed in (polled from block ``after + 1`` on)."""
    found: dict[bytes, int] = {}
    number, deadline = after + 1, time.monotonic() + timeout
    while not all(h in found for h in hashes):
        assert time.monotonic() < deadline, f"not all included by block {number - 1}"
        block_hash = substrate.get_block_hash(number)
        if block_hash is None:
            time.sleep(0.1)
            continue
        body = substrate.rpc_request("chain_getBlock", [block_hash])["result"]["block"]
        for encoded in body["extrinsics"]:
            found.setdefault(blake2_256(parse_data(encoded, "extrinsic")), number)
        number += 1
    return [found[h] for h in hashes]


def remarks(substrate: SubstrateInterface, keypair: Keypair, count: int, label: str) -> list[Any]:
    """``count`` remarks of ``keypair`` signed beforehand, from its next nonce on."""
    nonce = substrate.get_account_nonce(keypair.ss58_address)
    return [
        substrate.create_signed_extrinsic(
            call=substrate.compose_call("System", "remark", {"remark": f"{label} {k}".encode()}),
            keypair=keypair,
            nonce=nonce + k,
        )
        for k in range(count)
    ]


def submit_in_one_batch(chain: ChopsticksProcess, signed: list[Any]) -> None:
    """``author_submitExtrinsic`` for each, in one JSON-RPC batch over HTTP; each accepted."""
    body = json.dumps([request("author_submitExtrinsic", [str(x.data)]) for x in signed])
    http_request = urllib.request.Request(
        chain.http_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http_request, timeout=60) as response:
        answers = json.loads(response.read())
    assert all("result" in a for a in answers), answers


def hashes_of(signed: list[Any]) -> list[bytes]:
    return [blake2_256(bytes(x.data.data)) for x in signed]


def test_what_arrives_while_a_block_builds_goes_into_the_next_block_together(
    substrate: SubstrateInterface, chain: ChopsticksProcess
) -> None:
    """Six remarks signed beforehand and sent in one JSON-RPC batch: chopsticks' own Instant
    mode builds six blocks, one per extrinsic in arrival order; the devnet builds the first at
    once and puts what arrived while it was being built (~0.3 s at least) into the next. (Sent
    one by one, signing between sends, a loaded run spread them over four blocks: fewer than
    one block each is what is asked here.)"""
    after = substrate.get_block_number(None)
    signed = remarks(substrate, DAVE_KEY, 6, "together")
    submit_in_one_batch(chain, signed)
    numbers = blocks_of(substrate, hashes_of(signed), after)
    assert numbers == sorted(numbers)  # nonce order kept
    assert len(set(numbers)) < len(numbers), numbers


def test_a_later_nonce_built_alone_before_its_predecessor_arrives_waits_for_it(
    substrate: SubstrateInterface, chain: ChopsticksProcess
) -> None:
    """Arrival order is not nonce order: chopsticks validates the extrinsics of one batch
    concurrently, and CI's run of 5c5abdb saw a later nonce pooled first, built alone, refused
    (``Future``) and dropped, its account wedged. Here without timing: the later one is sent
    alone and gets its block (refused in it); the earlier one, sent after that block, lands in
    the next block with it. Nothing else is built: a build that included nothing and saw
    nothing arrive is not followed by another."""
    nonce = substrate.get_account_nonce(FERDIE_KEY.ss58_address)
    after = substrate.get_block_number(None)
    log_before = chain.log_path.stat().st_size
    earlier, later = remarks(substrate, FERDIE_KEY, 2, "gap")
    assert "result" in substrate.rpc_request("author_submitExtrinsic", [str(later.data)])
    deadline = time.monotonic() + 60
    while substrate.get_block_number(None) == after:
        assert time.monotonic() < deadline, "no block built for the later nonce"
        time.sleep(0.05)
    time.sleep(0.5)  # no block follows the one that included nothing
    assert substrate.get_block_number(None) == after + 1
    assert "result" in substrate.rpc_request("author_submitExtrinsic", [str(earlier.data)])
    numbers = blocks_of(substrate, hashes_of([earlier, later]), after, timeout=30.0)
    assert numbers == [after + 2, after + 2]
    assert substrate.get_account_nonce(FERDIE_KEY.ss58_address) == nonce + 2
    with chain.log_path.open("rb") as log:
        log.seek(log_before)
        told = log.read().decode("utf-8", errors="replace")
    assert "refused (Future) waits for the next block (try 1)" in told


def test_a_batch_in_reverse_nonce_order_is_all_included_in_nonce_order(
    substrate: SubstrateInterface, chain: ChopsticksProcess
) -> None:
    """Six remarks sent in one batch, latest nonce first: however chopsticks' concurrent
    validation orders their arrival, every one lands, each in its nonce's order (dropping a
    later nonce built before its predecessor left five of six out, most runs)."""
    after = substrate.get_block_number(None)
    signed = remarks(substrate, REVERSED_KEY, 6, "reversed")
    submit_in_one_batch(chain, signed[::-1])
    numbers = blocks_of(substrate, hashes_of(signed), after)
    assert numbers == sorted(numbers)


def test_an_extrinsic_that_does_not_fit_waits_for_the_next_block_with_its_later_nonces(
    substrate: SubstrateInterface, chain: ChopsticksProcess
) -> None:
    """Two remarks of 2.2 MB cannot share a block (its normal class takes 3.75 MiB); a block
    is built with both and a smaller remark of the same account after them (``dev_newBlock``
    with these transactions: no timing involved). chopsticks applies the first and drops the
    second (``ExhaustsResources``) and the small one (its nonce then in the future); the devnet
    keeps both for the next block, in nonce order, as a node's pool does."""
    nonce = substrate.get_account_nonce(EVE_KEY.ss58_address)
    after = substrate.get_block_number(None)
    log_before = chain.log_path.stat().st_size
    big = b"\x5a" * 2_200_000
    signed = [
        substrate.create_signed_extrinsic(
            call=substrate.compose_call("System", "remark", {"remark": r}),
            keypair=EVE_KEY,
            nonce=n,
        )
        for n, r in ((nonce, big), (nonce + 1, big), (nonce + 2, b"after the big ones"))
    ]
    answer = substrate.rpc_request(
        "dev_newBlock", [{"transactions": [str(x.data) for x in signed]}]
    )
    assert "result" in answer, answer
    hashes = hashes_of(signed)
    first, second, small = blocks_of(substrate, hashes, after, timeout=120.0)
    assert first == after + 1 and second == small == first + 1
    assert substrate.get_account_nonce(EVE_KEY.ss58_address) == nonce + 3
    with chain.log_path.open("rb") as log:
        log.seek(log_before)
        told = log.read().decode("utf-8", errors="replace")
    assert "refused (ExhaustsResources) waits for the next block" in told
