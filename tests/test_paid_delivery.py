"""Paid delivery, the relayer's side (issue #11; docs/design.md "Paid delivery", docs/relayer.md
"Relay policy"): the ``deliver`` policy in the config, the ``unpaid`` status and its migration,
``passerelle quote`` and ``send``'s payment, and a relayer that holds an unpaid message back
until a top-up arrives.

The chain tests share the session anvil: both "chains" of a route are two domains deployed on
it (an Inbox trusts an origin by domain and outbox address, so one chain exercises the same
code as two). Checkpoints are signed here with the committee's test keys and published to the
store, as attesters would: no attester processes to start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from eth_abi.abi import encode as abi_encode
from hexbytes import HexBytes
from test_ledger import ORIGIN, Backend, disc
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_ledger_migrations import all_rows, legacy_ledger, run_statements, schema_of, upgrade_to
from test_substrate_route import config_toml, load
from web3 import Web3

import relayer.relay as relay_module
from adapters.errors import AdapterError
from adapters.evm.chain import selector
from adapters.jsonrpc import MalformedAnswer
from adapters.substrate.client import (
    BalanceTransfer,
    RemarkSeen,
    SubstrateClient,
    SubstrateEvent,
    fee_transfer,
)
from devnet.anvil import DEV_PRIVATE_KEYS, AnvilProcess
from devnet.evm import EvmDeployment, deploy_evm_chain, link_evm_chains
from light_clients.committee import Checkpoint, address_of
from light_clients.hashing import blake2_256, keccak256
from light_clients.message import Message
from light_clients.substrate.remark import REMARK_PREFIX
from relayer import cli, operator, user
from relayer.checkpoints import SignedCheckpoint, open_checkpoint_store
from relayer.config import DEFAULT_DELIVERY_GAS, Config, ConfigError, RoutePayment, load_config
from relayer.families.evm import user as user_evm
from relayer.families.evm.connection import open_evm
from relayer.families.evm.origin import EvmOrigin
from relayer.families.evm.payments import GAS_PAYMENT, PAID, paid_ids, rate_of
from relayer.families.substrate.payments import message_fee
from relayer.ledger import (
    SCHEMA_VERSION,
    DiscoveredMessage,
    IllegalTransition,
    LedgerSchemaError,
    MessageStatus,
    migrate_ledger,
    open_ledger,
)
from relayer.payments import GasRate, Payment, route_payments
from relayer.relay import Relayer
from relayer.signer import LocalSigner

A, B = 7101, 7102  # the origin that asks for payment, and the other end of the route
C = 7103  # a domain A's Paymaster prices too, which serves nobody here
COMMITTEE_KEYS = tuple(keccak256(b"paid delivery attester %d" % i) for i in range(3))
DEPLOYER_KEY, RELAYER_KEY, CLIENT_KEY, PAYER_KEY = (
    bytes.fromhex(DEV_PRIVATE_KEYS[n].removeprefix("0x")) for n in (0, 7, 8, 9)
)  # the payer tops up: anyone may
GAS_PRICE, RATE = 10**9, 10**10  # the devnet Paymaster's rate (devnet/evm.py)


def h(data: bytes) -> str:
    return "0x" + data.hex()


# --------------------------------------------------------------------------- config


def policy_config(tmp_path: Path, policy: str, *, paymaster: bool = True) -> Config:
    """tests/test_substrate_route.py's config (alpha, beta, gamma, assethub) with a paymaster on
    alpha and ``policy`` as ``[relayer.policy]``."""
    text = config_toml()
    if paymaster:
        text = text.replace(
            'inbox = "0x' + "12" * 20 + '"',
            'inbox = "0x' + "12" * 20 + '"\npaymaster = "0x' + "13" * 20 + '"',
        )
    return load(tmp_path, text + "\n[relayer.policy]\n" + policy + "\n")


def test_the_policy_says_per_route_what_payment_it_asks(tmp_path: Path) -> None:
    plain = load(tmp_path, config_toml())
    assert plain.relay_policy.route_payment(1, 2) == RoutePayment("all", DEFAULT_DELIVERY_GAS)
    assert not plain.relay_policy.any_paid
    config = policy_config(
        tmp_path,
        # Below the EVM minimum: only with recipients the operator knows.
        f'allow_recipients = ["0x{"0b" * 20}"]\n'
        'delivery_gas = 90000\nroutes = [{ from = "alpha", to = "beta", deliver = "paid" },'
        ' { from = "alpha", to = "gamma", delivery_gas = 5000 }]',
    )
    policy = config.relay_policy
    alpha, beta, gamma = (config.chain(n).domain for n in ("alpha", "beta", "gamma"))
    assert policy.route_payment(alpha, beta) == RoutePayment("paid", 90_000)
    assert policy.route_payment(alpha, gamma) == RoutePayment("all", 5_000)
    assert policy.route_payment(beta, alpha) == RoutePayment("all", 90_000)
    assert policy.any_paid
    # The gas charged grows with the body: calldata is what a big message costs the relayer.
    assert policy.route_payment(alpha, beta).gas_for(100) == 90_000 + 40 * 100


@pytest.mark.parametrize(
    ("policy", "paymaster", "expected"),
    [
        (
            'deliver = "paied"',
            True,
            "relayer.policy.deliver: 'paied' is not one of all, paid, did you mean 'paid'?",
        ),
        ("deliver = 1", True, "relayer.policy.deliver: 1 is not one of all, paid"),
        ("delivery_gas = 0", True, "'relayer.policy.delivery_gas' out of range: 0"),
        ("delivery_gas = 30000001", True, "'relayer.policy.delivery_gas' out of range"),
        ('delivery_gas = "lots"', True, "'relayer.policy.delivery_gas' must be an integer"),
        ('routes = "alpha"', True, "relayer.policy.routes"),
        (
            'routes = [{ from = "alpha", to = "beta", pay = "paid" }]',
            True,
            "relayer.policy.routes[0]: unknown key 'pay'",
        ),
        (
            'routes = [{ from = "omega", to = "beta", deliver = "paid" }]',
            True,
            "relayer.policy.routes[0].from: 'omega' is not a configured origin",
        ),
        (
            'routes = [{ from = "alpha", to = 99, deliver = "paid" }]',
            True,
            "relayer.policy.routes[0].to: 99 is not a configured destination",
        ),
        (
            'routes = [{ from = "alpha", to = "alpha", deliver = "paid" }]',
            True,
            "relayer.policy.routes[0]: from and to are the same chain",
        ),
        (
            'routes = [{ to = "beta", deliver = "paid" }]',
            True,
            "relayer.policy.routes[0]: missing field 'from'",
        ),
        (
            'routes = [{ from = "alpha", to = "beta" }]',
            True,
            "relayer.policy.routes[0]: give deliver or delivery_gas",
        ),
        (
            'routes = [{ from = "alpha", to = "beta", deliver = "paid" },'
            ' { from = 1, to = "beta", deliver = "all" }]',
            True,
            "relayer.policy.routes[1]: the route 1 → beta is listed twice",
        ),
        (
            'routes = [{ from = "alpha", to = "beta", deliver = "paid" }]',
            False,
            "policy.routes: the paid route alpha → beta needs a paymaster contract on alpha",
        ),
        (
            'deliver = "paid"',
            True,
            "policy.deliver: the paid route beta → alpha needs a paymaster contract on beta",
        ),
        (
            'routes = [{ from = "assethub", to = "alpha", deliver = "paid" }]',
            True,
            "routes: the paid route assethub → alpha needs a fee_account on assethub",
        ),
        (
            'deliver = "paid"\nroutes = [{ from = "beta", to = "alpha", deliver = "all" }]',
            True,
            "relayer.policy.deliver: the paid route beta → gamma needs",
        ),
    ],
)
def test_each_wrong_policy_is_one_line_naming_it(
    tmp_path: Path, policy: str, paymaster: bool, expected: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        policy_config(tmp_path, policy, paymaster=paymaster)
    line = str(refused.value)
    assert "\n" not in line and expected in line, line


# --------------------------------------------------------------------------- ledger


def test_unpaid_is_a_waiting_status_never_a_failure(fast_dir: Path) -> None:
    """attested ⇄ unpaid; an unpaid message can be skipped or seen delivered, but not fail."""
    with open_ledger(fast_dir / "ledger.db") as ledger:
        ledger.record_discovered([disc(ORIGIN, 0)])
        (message_id,) = [m.id for m in ledger.messages()]
        checkpoint = ledger.save_checkpoint(
            ORIGIN, b"\x0b" * 32, b"\x0c" * 32, 0, block_number=1, block_hash=b"\x0d" * 32
        )
        ledger.transition([message_id], MessageStatus.FINAL)
        ledger.transition([message_id], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        with pytest.raises(Exception, match="reason"):
            ledger.transition([message_id], MessageStatus.UNPAID)  # why it waits is recorded
        ledger.transition([message_id], MessageStatus.UNPAID, reason="paid 0 < the quote 5")
        with pytest.raises(Exception, match="unpaid"):
            ledger.transition([message_id], MessageStatus.FAILED, reason="no")
        ledger.transition([message_id], MessageStatus.ATTESTED, reason="topped up")
        record = ledger.get(message_id)
        assert record is not None and record.checkpoint_id == checkpoint  # still attested by it
        assert [e.to_status for e in ledger.history(message_id)][-2:] == ["unpaid", "attested"]
        assert ledger.counts_by_status()[MessageStatus.UNPAID] == 0


def test_revision_0002_lets_a_v1_ledger_store_unpaid_and_keeps_every_row(
    backend: Backend,
) -> None:
    location = legacy_ledger(backend)  # schema 0001 with traffic, as Passerelle c5d2dfb left it
    before = all_rows(backend, location)
    with pytest.raises(LedgerSchemaError, match="passerelle ledger migrate"):
        open_ledger(location)  # opening never migrates
    assert migrate_ledger(location).after == f"{SCHEMA_VERSION:04d}"  # through 0002
    after = all_rows(backend, location)
    assert after.pop("ledger_meta") == [("schema_version", str(SCHEMA_VERSION))]
    assert after == {k: v for k, v in before.items() if k != "ledger_meta"}
    # The migrated schema is exactly a new ledger's (every revision on an empty database).
    fresh = backend.fresh("fresh")
    upgrade_to(fresh, "head")
    assert schema_of(backend, location) == schema_of(backend, fresh)
    with open_ledger(location) as ledger:
        attested = [m.id for m in ledger.messages() if m.status is MessageStatus.ATTESTED]
        ledger.transition(attested[:1], MessageStatus.UNPAID, reason="paid 0 < the quote 1")
        assert ledger.get(attested[0]).status is MessageStatus.UNPAID  # type: ignore[union-attr]
    # Still a CHECK: a status nobody defined is refused by the database itself; the audit
    # trail is still append-only.
    with pytest.raises(Exception, match=r"(?i)check"):
        run_statements(backend, location, ["UPDATE messages SET status = 'lost'"])
    with pytest.raises(Exception, match="append-only"):
        run_statements(backend, location, ["DELETE FROM status_events"])


def test_revision_0002_refuses_a_schema_it_does_not_know_and_changes_nothing(
    backend: Backend,
) -> None:
    if backend.admin is not None:
        pytest.skip("the CHECK text is rewritten on SQLite only")
    location = backend.fresh("edited")
    upgrade_to(location, "0001")
    run_statements(
        backend,
        location,
        [
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql = replace(sql, \"'skipped')\", \"'skipped', 'x')\") "
            "WHERE name = 'messages'",
        ],
    )
    with pytest.raises(Exception, match="expected one CHECK"):
        migrate_ledger(location)
    assert "'unpaid'" not in str(schema_of(backend, location))


# --------------------------------------------------------------------------- the rate


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (abi_encode(["uint256", "uint256"], [0, 0]), None),  # unpriced
        (abi_encode(["uint256", "uint256"], [5, 0]), None),  # a zero rate prices nothing
        (abi_encode(["uint256", "uint256"], [5, 7]), GasRate(5, 7)),
    ],
)
def test_a_rate_answer_is_read_exactly(answer: bytes, expected: GasRate | None) -> None:
    assert rate_of(answer, 2) == expected


@pytest.mark.parametrize(
    "answer",
    [b"", b"\x01" * 63, b"\x01" * 65, abi_encode(["uint256", "uint256"], [2**128, 1])],
)
def test_a_rate_no_paymaster_could_answer_is_refused(answer: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        rate_of(answer, 2)


# --------------------------------------------------------------------------- on the session anvil


@dataclass
class Route:
    config_path: Path
    config: Config
    w3: Web3
    origin: dict[str, bytes]
    target: dict[str, bytes]


@pytest.fixture(scope="module")
def route(anvil: AnvilProcess, tmp_path_factory: pytest.TempPathFactory) -> Route:
    """Domains A and B on the session anvil, linked both ways; A's route to B delivers paid
    messages only, B's to A everything."""
    committee = sorted(address_of(k) for k in COMMITTEE_KEYS)
    deployed = {
        domain: deploy_evm_chain(
            anvil.rpc_url,
            domain=domain,
            deployer_key=DEPLOYER_KEY,
            committee=committee,
            threshold=2,
            home_token=domain == A,
            client=address_of(CLIENT_KEY),
            priced_domains=[A, B, C],
        )
        for domain in (A, B)
    }
    link_evm_chains(
        *(EvmDeployment(anvil.rpc_url, d, c) for d, c in deployed.items()),
        deployer_key=DEPLOYER_KEY,
    )
    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
    start = w3.eth.block_number
    chains = "".join(
        f"""
[[chains]]
name = "{name}"
domain = {domain}
kind = "evm"
rpc = ["{anvil.rpc_url}"]
chain_id = {anvil.chain_id}
finality = "devnet-instant"
start_block = {start}
"""
        + "".join(f'{key} = "{h(address)}"\n' for key, address in deployed[domain].items())
        for name, domain in (("origin", A), ("target", B))
    )
    text = f"""devnet = true
[ledger]
location = "ledger.db"
[committee]
validators = [{", ".join(f'"{h(v)}"' for v in committee)}]
threshold = 2
checkpoint_store = "checkpoints"
{chains}
[relayer]
key = "{h(RELAYER_KEY)}"
[relayer.policy]
routes = [{{ from = "origin", to = "target", deliver = "paid" }}]
[client]
key = "{h(CLIENT_KEY)}"
"""
    path = tmp_path_factory.mktemp("paid") / "passerelle.toml"
    path.write_text(text)
    return Route(path, load_config(path), w3, deployed[A], deployed[B])


def sign_checkpoints(route: Route) -> None:
    """Publish threshold signatures over each outbox's current checkpoint, as attesters do."""
    store = open_checkpoint_store(route.config.checkpoint_location)
    latest = route.w3.eth.get_block("latest")
    for domain, contracts in ((A, route.origin), (B, route.target)):
        outbox = route.w3.eth.contract(
            address=Web3.to_checksum_address(contracts["outbox"]), abi=OUTBOX_ABI
        )
        count = outbox.functions.count().call()
        if count == 0:
            continue
        checkpoint = Checkpoint(
            origin=domain,
            outbox=bytes(12) + contracts["outbox"],
            root=bytes(outbox.functions.root().call()),
            index=count - 1,
        )
        for signer in map(LocalSigner, COMMITTEE_KEYS[:2]):
            store.publish(
                SignedCheckpoint.create(
                    signer,
                    checkpoint,
                    block_number=latest["number"],
                    block_hash=bytes(latest["hash"]),
                )
            )


OUTBOX_ABI = [
    {
        "name": n,
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"type": t, "name": ""}],
    }
    for n, t in (("count", "uint32"), ("root", "bytes32"))
]


def pay(route: Route, message_id: bytes, destination: int, gas: int, value: int) -> None:
    """``Paymaster.pay`` on A from PAYER_KEY (anyone may top up)."""
    payer = address_of(PAYER_KEY)
    data = selector("pay(bytes32,uint32,uint256,address)") + abi_encode(
        ["bytes32", "uint32", "uint256", "address"], [message_id, destination, gas, payer]
    )
    signed = route.w3.eth.account.sign_transaction(
        {
            "to": Web3.to_checksum_address(route.origin["paymaster"]),
            "data": data,
            "value": value,
            "gas": 200_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "nonce": route.w3.eth.get_transaction_count(Web3.to_checksum_address(payer)),
            "chainId": route.w3.eth.chain_id,
        },
        PAYER_KEY,
    )
    receipt = route.w3.eth.wait_for_transaction_receipt(
        route.w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1


def inbox_events(route: Route, message_id: bytes) -> list[Any]:
    """Every Inbox log on B about ``message_id`` (Delivered, AlreadyDelivered, HandleFailed)."""
    return [
        entry
        for entry in route.w3.eth.get_logs(
            {"address": Web3.to_checksum_address(route.target["inbox"]), "fromBlock": 0}
        )
        if len(entry["topics"]) > 1 and bytes(entry["topics"][1]) == message_id
    ]


async def until(condition: Any, what: str, timeout: float = 30) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.05)
        return
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.chain
def test_an_unpaid_message_waits_until_a_top_up_then_is_delivered_once(route: Route) -> None:
    config = route.config
    body = b"pay me"
    gas = config.relay_policy.route_payment(A, B).gas_for(len(body))
    quote = GasRate(GAS_PRICE, RATE).fee(gas)
    # The relayer's formula is the Paymaster's, to the wei.
    paymaster = route.w3.eth.contract(
        address=Web3.to_checksum_address(route.origin["paymaster"]),
        abi=[{"name": "quote", "type": "function", "stateMutability": "view",
              "inputs": [{"type": "uint32", "name": ""}, {"type": "uint256", "name": ""}],
              "outputs": [{"type": "uint256", "name": ""}]}],
    )  # fmt: skip
    for amount in (1, 3, gas, 10**12 + 7):
        assert paymaster.functions.quote(B, amount).call() == GasRate(GAS_PRICE, RATE).fee(amount)

    # A → B (paid only): sent without paying; B → A (deliver all): sent without paying too.
    (unpaid,) = trio.run(lambda: user.send_messages(config, A, B, body, pay=False))
    (free,) = trio.run(lambda: user.send_messages(config, B, A, b"free ride", pay=False))
    assert unpaid.fee is None and free.fee is None
    # Payments that buy this message nothing: for another id, and for it to another domain.
    pay(route, keccak256(b"someone else"), B, gas, quote)
    pay(route, unpaid.id, C, gas, quote)
    sign_checkpoints(route)

    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer.unpaid_poll = 0.1
        unpaid_id, free_id = h(unpaid.id), h(free.id)

        def status(message_id: str) -> str | None:
            record = ledger.get(message_id)
            return None if record is None else record.status

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(lambda: status(unpaid_id) == "unpaid", "the message to wait unpaid")
                await until(lambda: status(free_id) == "delivered", "the free route's delivery")
                # Held back: no transaction ever carried it, the Inbox never heard of it.
                assert ledger.transactions(chain=B) == []
                assert "submitted" not in [e.to_status for e in ledger.history(unpaid_id)]
                assert inbox_events(route, unpaid.id) == []
                reason = ledger.get(unpaid_id).reason  # type: ignore[union-attr]
                assert reason is not None and f"bought 0 gas < the {gas}" in reason
                # Paying for half the gas is not enough: a round of re-checks leaves it waiting.
                pay(route, unpaid.id, B, gas // 2, GasRate(GAS_PRICE, RATE).fee(gas // 2))
                assert await relayer.recheck_unpaid() == 0
                assert status(unpaid_id) == "unpaid"
                pay(route, unpaid.id, B, gas, quote)  # the top-up that covers it
                await until(lambda: status(unpaid_id) == "delivered", "delivery after the top-up")
                nursery.cancel_scope.cancel()

        trio.run(main)
        history = [str(e.to_status) for e in ledger.history(unpaid_id)]
        # (A broadcast may be retried in between: both destinations are one anvil here, so the
        # two deliveries' engines share the relayer's account nonces.)
        after = history[history.index("unpaid") :]
        assert after[:2] == ["unpaid", "attested"] and after[-1] == "delivered"
        assert "failed" not in after
    assert len(inbox_events(route, unpaid.id)) == 1  # delivered exactly once


@pytest.mark.chain
def test_a_lying_origin_rpc_can_only_make_the_relayer_deliver_unpaid(route: Route) -> None:
    """The relayer believes its own origin RPC about payments (docs/relayer.md): an endpoint
    that claims a payment makes it deliver a message that did not pay, i.e. spend its own gas.
    Nothing else: the message is real (attested), and the destination never looks at payments."""
    config = route.config
    (sent,) = trio.run(lambda: user.send_messages(config, A, B, b"liar", pay=False))
    chain = config.chain(A)

    async def read(lie: bool) -> bool:
        async with open_evm(chain) as evm:
            if lie:
                honest_calls = evm.call_many

                async def lying(to: bytes, datas: Any, block: Any = "latest") -> list[bytes]:
                    answers = await honest_calls(to, datas, block)
                    return [
                        abi_encode(["uint256", "uint256"], [10**30, 10**9]) if d[:4] == PAID else a
                        for d, a in zip(datas, answers, strict=True)
                    ]

                evm.call_many = lying  # type: ignore[method-assign]
            record = _record(sent.id, A, B, b"liar")
            payments = await route_payments(
                chain,
                EvmOrigin(chain, evm),
                [record],
                lambda d: config.relay_policy.route_payment(A, d),
            )
            return payments[record.id].covers

    assert trio.run(read, False) is False
    assert trio.run(read, True) is True


@dataclass
class Record:
    """What the payment check reads of a ledger record."""

    id: str
    origin: int
    destination: int
    message: bytes
    log_index: int = 0


def _record(message_id: bytes, origin: int, destination: int, body: bytes) -> Any:
    """A stand-in for the ledger's record of a message from ``origin`` to ``destination``."""
    message = Message(1, 0, origin, bytes(32), destination, b"\x02" * 32, body)
    return Record(h(message_id), origin, destination, message.encode())


# --------------------------------------------------------------------------- the CLI


def route_command(
    capsys: pytest.CaptureFixture[str], route: Route, command: str, *args: str
) -> tuple[int, str, str]:
    """``passerelle COMMAND --config … --from origin --to target ARGS…``."""
    base = ["--config", str(route.config_path), "--from", "origin", "--to", "target"]
    return passerelle(capsys, command, *base, *args)


def passerelle(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.chain
def test_quote_prints_the_fee_and_send_pays_it(
    route: Route, capsys: pytest.CaptureFixture[str]
) -> None:
    gas = route.config.relay_policy.route_payment(A, B).gas_for(5)
    fee = GasRate(GAS_PRICE, RATE).fee(gas)
    code, out, err = route_command(capsys, route, "quote", "--body", "hello")
    assert (code, err) == (0, "")
    assert out == f"origin → target: {fee} wei for {gas} gas (route policy: deliver paid)\n"
    code, out, _ = route_command(
        capsys,
        route,
        "quote",
        "--token",
        "5",
        "--json",
    )
    token_gas = route.config.relay_policy.route_payment(A, B).gas_for(user.TOKEN_BODY_SIZE)
    assert code == 0 and json.loads(out) == {
        "origin": "origin", "destination": "target", "gas": token_gas,
        "fee": GasRate(GAS_PRICE, RATE).fee(token_gas), "unit": "wei", "deliver": "paid",
    }  # fmt: skip

    client = Web3.to_checksum_address(address_of(CLIENT_KEY))
    before = route.w3.eth.get_balance(client)
    code, out, err = route_command(
        capsys,
        route,
        "send",
        "--body",
        "hello",
        "--json",
    )
    assert (code, err) == (0, "")
    sent = json.loads(out)
    assert sent["fee"] == fee
    assert paid_for(route, sent["id"]) == [fee, gas]
    receipt = route.w3.eth.get_transaction_receipt(sent["tx"])
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    # Exactly the fee: the margin sent along came back in the same call.
    assert before - route.w3.eth.get_balance(client) == fee + gas_cost

    # --no-pay pays nothing; the free direction has no paymaster rate asked of it.
    code, out, _ = route_command(
        capsys,
        route,
        "send",
        "--body",
        "x",
        "--no-pay",
        "--json",
    )
    assert code == 0 and json.loads(out)["fee"] is None

    # A token transfer pays too, in the transfer's own transaction (transferRemoteAndPay): the
    # transaction that dispatched it carried the payment, the Paymaster kept exactly the fee
    # and the margin came back in the same call.
    paymaster = route.w3.to_checksum_address(route.config.chain("origin").contract("paymaster"))
    held = route.w3.eth.get_balance(paymaster)
    code, out, err = route_command(capsys, route, "send", "--token", "5", "--json")
    assert (code, err) == (0, "")
    sent = json.loads(out)
    token_fee = GasRate(GAS_PRICE, RATE).fee(token_gas)
    assert sent["fee"] == token_fee
    assert paid_for(route, sent["id"]) == [token_fee, token_gas]
    transfer = route.w3.eth.get_transaction(sent["tx"])
    assert transfer["value"] == token_fee + token_fee // user_evm.PAY_MARGIN
    assert route.w3.eth.get_balance(paymaster) - held == token_fee


def paid_for(route: Route, message_id: str) -> list[int]:
    """``Paymaster.paid(id, B)`` on A: [wei, gas]."""
    paymaster = route.w3.eth.contract(
        address=Web3.to_checksum_address(route.origin["paymaster"]),
        abi=[{"name": "paid", "type": "function", "stateMutability": "view",
              "inputs": [{"type": "bytes32", "name": ""}, {"type": "uint32", "name": ""}],
              "outputs": [{"type": "uint256", "name": ""}, {"type": "uint256", "name": ""}]}],
    )  # fmt: skip
    return list(paymaster.functions.paid(bytes.fromhex(message_id[2:]), B).call())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--body", "x", "--token", "1"], "give exactly one of --body or --token"),
        ([], "give exactly one of --body or --token"),
        (["--body", "x", "--to", "nowhere"], "nowhere"),
        (["--token", "0"], "--token"),
    ],
)
def test_a_bad_quote_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    path = tmp_path / "passerelle.toml"
    path.write_text(config_toml())
    argv = ["quote", "--config", str(path), "--from", "alpha", "--to", "beta", *args]
    code, out, err = passerelle(capsys, *argv)
    assert code != 0 and out == "" and err.count("\n") == 1 and expected in err, err


def test_quote_from_an_origin_that_takes_no_payment_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "passerelle.toml"
    path.write_text(config_toml())
    code, out, err = passerelle(
        capsys, "quote", "--config", str(path), "--from", "alpha", "--to", "beta", "--body", "x"
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "alpha takes no payment for delivery" in err


def test_policy_all_reads_no_payment(tmp_path: Path) -> None:
    """Under ``deliver = "all"`` (the devnet's) the relayer never reads a payment: nothing of
    this feature costs a route that does not ask for it."""
    config = load(tmp_path, config_toml())

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"payments read on a deliver-all route ({name})")

    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger)
        relayer.origins = {c.domain: Untouchable() for c in config.chains}
        alpha, beta = config.chain("alpha").domain, config.chain("beta").domain
        record = _record(b"\x01" * 32, alpha, beta, b"ping")
        admitted = trio.run(relayer.admitted, [record])
    assert admitted == [record]


# --------------------------------------------------------------------------- a Substrate origin

FEE_ACCOUNT = b"\xfe" * 32
SUBSTRATE_FEES = (
    f'fee_account = "{h(FEE_ACCOUNT)}"\n'
    'fee_rates = { "1" = { gas_price = 7, exchange_rate = 30000000000 } }'
)


def substrate_config(tmp_path: Path, fees: str = SUBSTRATE_FEES, policy: str = "") -> Config:
    """tests/test_substrate_route.py's config, assethub's section ending with ``fees``."""
    text = config_toml().replace("\n[relayer]", f"{fees}\n\n[relayer]", 1)
    if policy:
        text += "\n[relayer.policy]\n" + policy + "\n"
    return load(tmp_path, text)


def test_a_substrate_origin_prices_delivery_from_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = substrate_config(
        tmp_path, policy='routes = [{ from = "assethub", to = "alpha", deliver = "paid" }]'
    )
    chain = config.chain("assethub")
    assert chain.settings().fee_account == FEE_ACCOUNT
    assert chain.settings().fee_rates == {1: (7, 3 * 10**10)}
    assert config.relay_policy.route_payment(chain.domain, 1).paid_only
    code, out, err = passerelle(
        capsys, "quote", "--config", str(config.path), "--from", "assethub", "--to", "alpha",
        "--body", "hi", "--json",
    )  # fmt: skip
    gas = DEFAULT_DELIVERY_GAS + 40 * 2
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "origin": "assethub", "destination": "alpha", "gas": gas, "fee": 21 * gas,
        "unit": "planck", "deliver": "paid",
    }  # fmt: skip
    code, out, err = passerelle(
        capsys, "quote", "--config", str(config.path), "--from", "assethub", "--to", "beta",
        "--body", "hi",
    )  # fmt: skip
    assert code == 2 and out == "" and "assethub prices no delivery to beta" in err


@pytest.mark.parametrize(
    ("fees", "expected"),
    [
        (f'fee_account = "{h(FEE_ACCOUNT)}"', "fee_account and fee_rates go together"),
        ('fee_rates = { "1" = { gas_price = 1, exchange_rate = 1 } }', "go together"),
        ('fee_account = "0x01"\nfee_rates = {}', "fee_account"),
        (f'fee_account = "{h(bytes(32))}"\nfee_rates = {{}}', "fee_account must not be zero"),
        (f'fee_account = "{h(FEE_ACCOUNT)}"\nfee_rates = {{}}', "fee_rates is empty"),
        (
            f'fee_account = "{h(FEE_ACCOUNT)}"\n'
            'fee_rates = { "1" = { gas_price = 0, exchange_rate = 1 } }',
            "fee_rates.1.gas_price' out of range",
        ),
        (
            f'fee_account = "{h(FEE_ACCOUNT)}"\n'
            'fee_rates = { "1" = { gas_price = 1, rate = 1 } }',
            "unknown key 'rate'",
        ),
        (
            f'fee_account = "{h(FEE_ACCOUNT)}"\n'
            f'fee_rates = {{ "1" = {{ gas_price = 1, exchange_rate = {2**128} }} }}',
            "exchange_rate",
        ),
    ],
)
def test_each_wrong_fee_setting_is_one_line(tmp_path: Path, fees: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        substrate_config(tmp_path, fees)
    line = str(refused.value)
    assert "\n" not in line and expected in line, line


SIGNER = b"\x0a" * 32  # the sender's account: it signs the extrinsic


def seen(body: bytes, *paid: tuple[bytes, bytes, int], extrinsic: int = 3) -> RemarkSeen:
    """A remark of ``body`` (assethub → alpha) signed by SIGNER, after ``paid`` transfers."""
    remark = REMARK_PREFIX + Message(1, 0, 3, SIGNER, 1, b"\x0b" * 32, body).encode()
    return RemarkSeen(
        block_number=5,
        block_hash=b"\x05" * 32,
        extrinsic_index=extrinsic,
        signer=SIGNER,
        remark=remark,
        event_sender=SIGNER,
        event_hash=blake2_256(remark),
        balance_transfers=tuple(BalanceTransfer(*t) for t in paid),
    )


def ledger_record(body: bytes, nonce: int, extrinsic: int = 3) -> Any:
    message = Message(1, nonce, 3, SIGNER, 1, b"\x0b" * 32, body)
    return Record(h(keccak256(message.encode())), 3, 1, message.encode(), extrinsic)


def test_a_substrate_message_is_paid_by_the_transfer_right_before_its_remark(
    tmp_path: Path,
) -> None:
    chain = substrate_config(tmp_path).chain("assethub")
    remarks = [
        seen(b"one", (SIGNER, FEE_ACCOUNT, 100), (SIGNER, FEE_ACCOUNT, 5)),
        seen(b"two", (SIGNER, FEE_ACCOUNT, 70)),
        seen(b"same", (SIGNER, FEE_ACCOUNT, 90)),
        seen(b"same", (SIGNER, FEE_ACCOUNT, 60)),  # identical messages: the smaller fee each
        seen(b"elsewhere", (SIGNER, b"\x01" * 32, 500)),  # paid to another account
        seen(b"theirs", (b"\x0c" * 32, FEE_ACCOUNT, 500)),  # paid by someone else (a proxy)
        seen(b"other extrinsic", (SIGNER, FEE_ACCOUNT, 500), extrinsic=4),
    ]
    fees = {
        body: message_fee(ledger_record(body, nonce), remarks, chain)
        for nonce, body in enumerate([b"one", b"two", b"same", b"elsewhere", b"theirs"])
    }
    assert fees == {b"one": 105, b"two": 70, b"same": 60, b"elsewhere": 0, b"theirs": 0}
    # The remark in another extrinsic pays nothing for a message of extrinsic 3.
    assert message_fee(ledger_record(b"other extrinsic", 9), remarks, chain) == 0
    assert message_fee(ledger_record(b"other extrinsic", 9, extrinsic=4), remarks, chain) == 500
    # A chain that takes no payment credits nothing, whatever was transferred.
    plain = load(tmp_path, config_toml()).chain("assethub")
    assert message_fee(ledger_record(b"one", 0), remarks, plain) == 0


def test_a_payment_that_cannot_be_read_now_waits_unpaid_not_attested(tmp_path: Path) -> None:
    """Its origin not connected yet (or failing): the message waits ``unpaid`` with that
    reason, so the delivery does not pick it up, undecided, in every round; the unpaid loop
    reads it again (and leaves it waiting while it still cannot)."""
    config = policy_config(tmp_path, 'routes = [{ from = "alpha", to = "beta", deliver = "paid" }]')
    alpha, beta = config.chain("alpha").domain, config.chain("beta").domain
    raw = Message(1, 0, alpha, bytes(32), beta, b"\x02" * 32, b"ping").encode()
    with open_ledger(config.ledger) as ledger:
        ledger.record_discovered([DiscoveredMessage(raw, 1, b"\x01" * 32, b"\x02" * 32, 0)])
        (record,) = ledger.messages()
        checkpoint = ledger.save_checkpoint(
            alpha, b"\x0b" * 32, b"\x0c" * 32, 0, block_number=1, block_hash=b"\x0d" * 32
        )
        ledger.transition([record.id], MessageStatus.FINAL)
        ledger.transition([record.id], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        relayer = Relayer(config, ledger)
        relayer._load_lanes()
        assert relayer.origins == {}  # no scan has connected
        admitted = trio.run(relayer.admitted, ledger.by_status(MessageStatus.ATTESTED))
        assert admitted == []
        waiting = ledger.get(record.id)
        assert waiting is not None and waiting.status is MessageStatus.UNPAID
        assert waiting.reason == "its payment cannot be read on alpha now"
        assert trio.run(relayer.recheck_unpaid) == 0
        assert ledger.get(record.id).status is MessageStatus.UNPAID  # type: ignore[union-attr]


# --------------------------------------------------------------------------- hostile review fixes
# (review of paid delivery, /tmp/notes/s4/review-paid.md: each test below failed before its fix)


def unpaid_ledger(
    config: Config, count: int = 1, *, origin: str = "alpha", destination: str = "beta"
) -> list[str]:
    """``count`` messages ``origin`` → ``destination`` (one per block), recorded ``unpaid`` in
    ``config``'s ledger; their ids, oldest first."""
    source, target = config.chain(origin).domain, config.chain(destination).domain
    sender = SIGNER if config.chain(origin).substrate is not None else bytes(32)
    with open_ledger(config.ledger) as ledger:
        ledger.record_discovered(
            [
                DiscoveredMessage(
                    Message(1, n, source, sender, target, b"\x0b" * 32, b"spam").encode(),
                    100 + n,
                    (100 + n).to_bytes(32, "big"),
                    b"\x02" * 32,
                    1,
                )
                for n in range(count)
            ]
        )
        ids = [m.id for m in ledger.messages(limit=count)]
        checkpoint = ledger.save_checkpoint(
            source, b"\x0b" * 32, b"\x0c" * 32, count - 1, block_number=1, block_hash=b"\x0d" * 32
        )
        ledger.transition(ids, MessageStatus.FINAL)
        ledger.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        ledger.transition(ids, MessageStatus.UNPAID, reason="bought 0 gas < the 1")
    return ids


def only_the_unpaid_loop(relayer: Relayer) -> None:
    """No chain runs in these unit tests: the scan, collect and delivery loops idle, so what
    runs is what ``_run`` starts for payments (the relayer's own code decides that)."""

    async def idle(*_: Any) -> None:
        await trio.sleep_forever()

    relayer._scan_loop = idle  # type: ignore[method-assign,assignment]
    relayer._collect_loop = idle  # type: ignore[method-assign,assignment]
    relayer._deliver_loop = idle  # type: ignore[method-assign,assignment]


def test_policy_back_to_all_releases_the_unpaid_messages_then_the_loop_ends(
    tmp_path: Path,
) -> None:
    """Finding 3: with no paid route left, the re-check still starts (the ledger holds unpaid
    messages), sends them back to ``attested``, and ends once none is left."""
    config = policy_config(tmp_path, 'deliver = "all"')
    assert not config.relay_policy.any_paid
    (message_id,) = unpaid_ledger(config)
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer.unpaid_poll = 0.02
        only_the_unpaid_loop(relayer)
        ended: list[str] = []
        loop = relayer._unpaid_loop

        async def watched() -> None:
            await loop()
            ended.append("unpaid loop")

        relayer._unpaid_loop = watched  # type: ignore[method-assign]

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(lambda: ended == ["unpaid loop"], "the re-check to end", timeout=20)
                nursery.cancel_scope.cancel()

        trio.run(main)
        record = ledger.get(message_id)
        assert record is not None and record.status is MessageStatus.ATTESTED
        assert record.reason == "its route no longer asks for payment"


def test_an_operator_skip_or_a_failing_round_never_ends_the_relayer(tmp_path: Path) -> None:
    """Finding 4: a message skipped between the re-check's read and its write stays skipped
    (only what is still unpaid moves), and a round that raises a ledger or RPC error is logged
    and counted; the loop goes on."""

    config = policy_config(tmp_path, 'routes = [{ from = "alpha", to = "beta", deliver = "paid" }]')
    skipped, paid = unpaid_ledger(config, 2)
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer.unpaid_poll = 0.01
        only_the_unpaid_loop(relayer)

        async def payments(records: Any) -> dict[str, Payment]:
            # While the payments are read on the origin, the operator skips one; both are
            # covered by the time the answer comes.
            operator.skip(ledger, [skipped], "spam")
            return {r.id: Payment(10, 1, 1, 1, bought=1) for r in records}

        relayer.payments = payments  # type: ignore[method-assign]
        recheck = relayer.recheck_unpaid
        failures: list[BaseException] = [
            IllegalTransition(skipped, "skipped", "attested"),
            AdapterError("origin down"),
        ]
        rounds: list[int] = []

        async def flaky() -> int:
            rounds.append(1)
            if failures:
                raise failures.pop(0)
            return await recheck()

        relayer.recheck_unpaid = flaky  # type: ignore[method-assign]

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(lambda: len(rounds) >= 5, "five re-check rounds", timeout=20)
                nursery.cancel_scope.cancel()

        trio.run(main)  # no exception: the relayer ran on
        assert relayer.metrics.rpc_errors >= 1
        assert ledger.get(skipped).status is MessageStatus.SKIPPED  # type: ignore[union-attr]
        assert ledger.get(paid).status is MessageStatus.ATTESTED  # type: ignore[union-attr]


def test_a_top_up_behind_a_flood_is_seen_in_the_next_round_by_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 6: after the start's sweep, a round reads only what the origin's payment logs
    name (one message here), not the flood again; the next sweep waits ``unpaid_sweep``."""

    config = policy_config(tmp_path, 'routes = [{ from = "alpha", to = "beta", deliver = "paid" }]')
    ids = unpaid_ledger(config, 1_001)
    topped_up = ids[-1]
    logs: list[set[str]] = []

    async def paid_since(chain: Any, origin: Any, after: int | None) -> tuple[int, set[str]]:
        return (after or 0) + 1, logs.pop(0) if logs else set()

    monkeypatch.setattr(relay_module, "paid_since", paid_since)
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger)
        relayer._load_lanes()
        relayer.origins[config.chain("alpha").domain] = object()  # type: ignore[assignment]
        reads: list[int] = []
        paid_ids: set[str] = set()

        async def payments(records: Any) -> dict[str, Payment]:
            reads.append(len(records))
            return {r.id: Payment(0, 1, 1, 1, bought=int(r.id in paid_ids)) for r in records}

        relayer.payments = payments  # type: ignore[method-assign]
        for _ in range(4):  # the start's sweep, a page a round, then quiet
            assert trio.run(relayer.recheck_unpaid) == 0
        assert reads == [500, 500, 1]
        paid_ids.add(topped_up)
        logs.append({topped_up, "0x" + "ee" * 32})  # and a payment for a message we never saw
        assert trio.run(relayer.recheck_unpaid) == 1
        assert reads[3:] == [1]
        assert ledger.get(topped_up).status is MessageStatus.ATTESTED  # type: ignore[union-attr]


def test_a_substrate_message_s_payment_is_read_once_not_every_round(tmp_path: Path) -> None:
    """Finding 5: a Substrate origin has no top-ups and its rates come from the config, so a
    final message's payment never changes while the relayer runs: its block is decoded once."""
    config = substrate_config(
        tmp_path, policy='routes = [{ from = "assethub", to = "alpha", deliver = "paid" }]'
    )
    hub = config.chain("assethub").domain
    unpaid_ledger(config, 600, origin="assethub", destination="alpha")
    decoded: list[bytes] = []

    class CountingClient(SubstrateClient):
        def __init__(self) -> None:  # no connection: only remarks() is called
            pass

        async def remarks(self, block_hash: bytes, **_: Any) -> list[Any]:
            decoded.append(block_hash)  # a whole block and its events, in the real client
            return []

    class Origin:
        client = CountingClient()

        async def final_head(self) -> Any:
            return SimpleNamespace(number=10_000)

    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger)
        relayer._load_lanes()
        relayer.origins[hub] = Origin()  # type: ignore[assignment]
        per_round = []
        for _ in range(4):
            before = len(decoded)
            assert trio.run(relayer.recheck_unpaid) == 0
            per_round.append(len(decoded) - before)
        assert per_round == [500, 100, 0, 0]
        relayer._unpaid[hub].next_sweep = 0  # a later sweep is due: it decodes none again
        assert trio.run(relayer.recheck_unpaid) == 0
        assert relayer._unpaid[hub].sweeping  # it did read a page of 500
        assert len(decoded) == 600


@pytest.mark.parametrize(
    "logs",
    [
        {"not": "a list"},
        ["not an object"],
        [{"address": "0x" + "14" * 20, "topics": ["0x" + "00" * 32] * 4}],  # another contract
        [{"address": "0x" + "13" * 20, "topics": ["0x" + "00" * 32] * 4}],  # another event
        [{"address": "0x" + "13" * 20, "topics": [h(keccak256(b"x")), "0x12"]}],
    ],
)
def test_a_payment_log_answer_that_is_not_one_is_refused(logs: Any) -> None:
    paymaster = b"\x13" * 20
    with pytest.raises(MalformedAnswer):
        paid_ids(logs, paymaster)
    good = {"address": "0x" + "13" * 20, "topics": [h(GAS_PAYMENT), h(b"\xaa" * 32), "0x", "0x"]}
    assert paid_ids([good, {**good, "removed": True, "topics": []}], paymaster) == {h(b"\xaa" * 32)}


def test_a_destination_down_at_start_up_does_not_end_the_relayer(tmp_path: Path) -> None:
    """The EVM delivery's first settle of pending transactions runs inside its retrying loop:
    beta's RPC refusing connections is an RPC error counted each round, not the end."""
    config = policy_config(tmp_path, 'deliver = "all"')
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.02)
        deliver = relayer._deliver_loop
        only_the_unpaid_loop(relayer)

        async def only_beta(chain: Any) -> None:
            if chain.name == "beta":
                await deliver(chain)
            else:
                await trio.sleep_forever()

        relayer._deliver_loop = only_beta  # type: ignore[method-assign]

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(lambda: relayer.metrics.rpc_errors >= 2, "two failed rounds", 30)
                nursery.cancel_scope.cancel()

        trio.run(main)


def test_quote_to_its_own_chain_is_refused_before_any_chain_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """alpha takes payment here, and its RPC answers nobody (nothing listens): the refusal is
    the route's, in one line, not an RPC error after a round trip."""
    path = tmp_path / "passerelle.toml"
    path.write_text(
        config_toml().replace(
            'inbox = "0x' + "12" * 20 + '"',
            'inbox = "0x' + "12" * 20 + '"\npaymaster = "0x' + "13" * 20 + '"',
        )
    )
    code, out, err = passerelle(
        capsys, "quote", "--config", str(path), "--from", "alpha", "--to", "1", "--body", "x"
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "alpha → alpha: no route from a chain to itself" in err


@pytest.mark.parametrize(
    "attributes",
    [
        ["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "x", 1],  # positional
        {"source": "x", "dest": "y", "value": 1},  # renamed fields
        {"from": "not an account", "to": "0x" + "0a" * 32, "amount": 1},
        None,
    ],
)
def test_a_transfer_event_that_cannot_be_parsed_pays_nothing_and_never_fails_the_block(
    attributes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 9: on a chain with no fee account, Balances.Transfer is not parsed at all; with
    one, an unparsable one is logged and pays nothing (the scan reads the block on)."""
    event = SubstrateEvent(3, "Balances", "Transfer", attributes)
    assert fee_transfer(event, None, 7) is None
    assert caplog.records == []
    assert fee_transfer(event, FEE_ACCOUNT, 7) is None
    assert "block 7: " in caplog.text and "(pays nothing)" in caplog.text
    good = SubstrateEvent(
        3, "Balances", "Transfer", {"from": h(SIGNER), "to": h(FEE_ACCOUNT), "amount": 5}
    )
    assert fee_transfer(good, FEE_ACCOUNT, 7) == BalanceTransfer(SIGNER, FEE_ACCOUNT, 5)


def raw_tx(route: Route, key: bytes, to: bytes | None, data: bytes, gas: int = 300_000) -> Any:
    """One transaction on the session anvil from ``key``; its receipt (asserted successful)."""
    sender = Web3.to_checksum_address(address_of(key))
    tx: dict[str, Any] = {
        "data": data,
        "value": 0,
        "gas": gas,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": route.w3.eth.get_transaction_count(sender),
        "chainId": route.w3.eth.chain_id,
    }
    if to is not None:
        tx["to"] = Web3.to_checksum_address(to)
    signed = route.w3.eth.account.sign_transaction(tx, key)
    receipt = route.w3.eth.wait_for_transaction_receipt(
        route.w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def set_gas_price(route: Route, gas_price: int) -> None:
    """The oracle (the devnet deployer) sets A's price of B's gas."""
    data = selector("setGasRate(uint32,uint128,uint128)") + abi_encode(
        ["uint32", "uint128", "uint128"], [B, gas_price, RATE]
    )
    raw_tx(route, DEPLOYER_KEY, route.origin["paymaster"], data)


def relay_until(config: Config, message_ids: list[str], statuses: set[str], what: str) -> None:
    """Run a relayer on ``config`` until every one of ``message_ids`` is in ``statuses``."""
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer.unpaid_poll = 0.05

        def done() -> bool:
            records = [ledger.get(i) for i in message_ids]
            return all(r is not None and r.status in statuses for r in records)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(done, what, timeout=60)
                nursery.cancel_scope.cancel()

        trio.run(main)


@pytest.mark.chain
def test_a_paid_message_never_costs_more_gas_than_it_bought_even_after_a_rate_rise(
    route: Route,
) -> None:
    """Findings 1 and 2. The sender picks a recipient that burns every gas the Inbox gives
    it, and pays exactly the quote (``send`` refunds its margin); then the oracle raises the
    price by one wei. The message is still delivered (it bought the gas; the price was the
    origin's to enforce when it paid), and its delivery costs the relayer no more gas than it
    bought."""
    config = route.config
    # Runtime 5b600056: JUMPDEST PUSH1 0 JUMP, a loop until out of gas.
    receipt = raw_tx(route, PAYER_KEY, None, bytes.fromhex("635b600056600052" + "6004601cf3"))
    burner = bytes.fromhex(receipt["contractAddress"][2:])
    (sent,) = trio.run(
        lambda: user.send_messages(config, A, B, b"burn", recipient=burner, pay=True)
    )
    fee, bought = paid_for(route, h(sent.id))
    assert bought == config.relay_policy.route_payment(A, B).gas_for(4)
    assert fee == GasRate(GAS_PRICE, RATE).fee(bought)  # exactly the quote: no slack
    set_gas_price(route, GAS_PRICE + 1)
    try:
        sign_checkpoints(route)
        relay_until(config, [h(sent.id)], {"delivered", "unpaid"}, "a verdict")
    finally:
        set_gas_price(route, GAS_PRICE)
    with open_ledger(config.ledger) as ledger:
        record = ledger.get(h(sent.id))
        assert record is not None and record.status == "delivered", record
        assert record.delivery_tx_hash is not None
        tx_hash = HexBytes(record.delivery_tx_hash)
        used = route.w3.eth.get_transaction_receipt(tx_hash)["gasUsed"]
        # Earlier tests' paid messages may share its batch: the transaction is paid for by all.
        carried = ledger.transaction_messages(B, record.delivery_tx_hash)
    assert h(sent.id) in carried
    bought_by_batch = sum(paid_for(route, message_id)[1] for message_id in carried)
    assert used <= bought_by_batch, (used, bought_by_batch, len(carried))


@pytest.mark.chain
def test_an_unpaid_message_someone_else_delivered_is_recorded_delivered(route: Route) -> None:
    """Finding 7: another relayer (its own ledger, free relaying) delivers a message that
    waits ``unpaid`` here; our re-check's sweep reads the destination's final state and
    records it delivered instead of waiting for a payment for ever."""
    config = route.config
    (sent,) = trio.run(lambda: user.send_messages(config, A, B, b"elsewhere", pay=False))
    sign_checkpoints(route)
    relay_until(config, [h(sent.id)], {"unpaid"}, "the message to wait unpaid")
    text = route.config_path.read_text()
    text = text.replace('location = "ledger.db"', 'location = "ledger-other.db"')
    text = text.replace('routes = [{ from = "origin", to = "target", deliver = "paid" }]', "")
    text = text.replace(h(RELAYER_KEY), DEV_PRIVATE_KEYS[6])
    other_path = route.config_path.with_name("other.toml")
    other_path.write_text(text)
    relay_until(load_config(other_path), [h(sent.id)], {"delivered"}, "the other delivery")
    assert len(inbox_events(route, sent.id)) == 1
    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger)
        relayer._load_lanes()
        # The start's sweep (earlier tests' unpaid messages went with it: the other relayer
        # delivered them too).
        assert trio.run(relayer.recheck_unpaid) >= 1
        record = ledger.get(h(sent.id))
        assert record is not None and record.status is MessageStatus.DELIVERED
        assert record.reason == "delivered on its destination by someone else (final)"


@pytest.mark.chain
def test_send_refuses_to_pay_when_the_outbox_pays_another_paymaster(route: Route) -> None:
    """Finding 8: the quote comes from the configured Paymaster, the ether goes wherever the
    Outbox points. If they differ, ``send`` pays nothing and sends nothing, in one line."""
    text = route.config_path.read_text()
    ours, theirs = h(route.origin["paymaster"]), h(route.target["paymaster"])
    assert text.count(f'paymaster = "{ours}"') == 1
    stale = route.config_path.with_name("stale.toml")
    stale.write_text(text.replace(f'paymaster = "{ours}"', f'paymaster = "{theirs}"'))
    config = load_config(stale)
    outbox = route.w3.eth.contract(
        address=Web3.to_checksum_address(route.origin["outbox"]), abi=OUTBOX_ABI
    )
    before = outbox.functions.count().call()
    with pytest.raises(ConfigError) as refused:
        trio.run(lambda: user.send_messages(config, A, B, b"stale", pay=True))
    assert f"pays the paymaster {ours}, not the configured {theirs}" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert outbox.functions.count().call() == before


def test_a_paid_route_to_an_evm_chain_charging_less_than_a_delivery_can_cost_is_refused(
    tmp_path: Path,
) -> None:
    """Finding 1, at load: the sender picks the recipient, and a recipient that burns all the
    gas the Inbox gives it costs the relayer about 600k; a paid route to an EVM destination
    must charge at least that, unless the operator vouches for every recipient."""
    for policy, where in (
        ('deliver = "paid"\ndelivery_gas = 649999', "relayer.policy.delivery_gas"),
        (
            'routes = [{ from = "alpha", to = "beta", deliver = "paid", delivery_gas = 150000 }]',
            "relayer.policy.routes",
        ),
    ):
        with pytest.raises(ConfigError) as refused:
            policy_config(tmp_path, policy)
        message = str(refused.value)
        assert f"{where}: the paid route alpha → beta charges" in message, message
        assert "less than the 650000 one message can cost on beta" in message
        assert "\n" not in message
    # The default charges exactly that; "all" routes and allow-listed recipients may go lower.
    assert DEFAULT_DELIVERY_GAS == 650_000
    policy_config(tmp_path, 'routes = [{ from = "alpha", to = "beta", deliver = "paid" }]')
    policy_config(tmp_path, "delivery_gas = 1000")
    policy_config(
        tmp_path,
        f'allow_recipients = ["0x{"0b" * 20}"]\n'
        'routes = [{ from = "alpha", to = "beta", deliver = "paid", delivery_gas = 1000 }]',
    )
