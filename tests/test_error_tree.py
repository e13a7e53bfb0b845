"""One error tree (issue #9): every chain-side failure is an AdapterError, node JSON is parsed.

Three things are checked here:

- the hierarchy: ``RpcError`` and ``TxError`` (and all their subclasses) are ``AdapterError``s,
  so one ``except AdapterError`` and the CLI's one exit code cover the chain side;
- the transaction engine's parsers: whatever JSON a node answers, ``parse_quantity``,
  ``parse_base_fee`` and ``parse_receipt`` return a typed value or raise ``MalformedAnswer`` —
  never the ``KeyError``/``TypeError``/``ValueError`` that used to escape the relayer's handlers;
- the same through a real anvil behind a lying proxy, and the CLI's exit codes: an adapter error
  is one line and exit 1, a ``RouteHalted`` is one line and exit 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
import pytest
import trio
from fakes import RpcProxy, honest
from hypothesis import given
from hypothesis import strategies as st

from adapters.errors import AdapterError
from adapters.evm.tx import (
    MinedTx,
    SentTx,
    TxEngine,
    TxError,
    TxReverted,
    parse_base_fee,
    parse_quantity,
    parse_receipt,
)
from adapters.rpc import JsonRpcClient, MalformedAnswer, RpcCallError, RpcError, WrongChainError
from adapters.substrate.finality import NoFinalityProof
from devnet.anvil import DEV_ADDRESSES, DEV_PRIVATE_KEYS, AnvilProcess
from light_clients.ethereum.receipt import Log
from light_clients.hexstr import parse_data, to_hex
from relayer import cli as cli_module
from relayer.relay import RouteHalted
from relayer.signer import LocalSigner

TX_HASH = bytes(range(32))
CHAIN_ID = 31337
SENDER_KEY = parse_data(DEV_PRIVATE_KEYS[8], "dev key")
RECIPIENT = parse_data(DEV_ADDRESSES[9], "dev address")

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def good_log() -> dict[str, Any]:
    return {
        "address": "0x" + "AB" * 20,
        "topics": ["0x" + "11" * 32, "0x" + "22" * 32],
        "data": "0x" + "00" * 64,
        "logIndex": "0x0",
    }


def good_receipt(**changes: Any) -> dict[str, Any]:
    receipt = {
        "transactionHash": to_hex(TX_HASH),
        "blockNumber": "0x10",
        "gasUsed": "0x5208",
        "effectiveGasPrice": "0x3b9aca00",
        "status": "0x1",
        "logs": [good_log()],
    }
    receipt.update(changes)
    return receipt


# --------------------------------------------------------------------------- the hierarchy


@pytest.mark.parametrize(
    "cls",
    [
        RpcError,
        RpcCallError,
        WrongChainError,
        MalformedAnswer,
        TxError,
        TxReverted,
        NoFinalityProof,
    ],
)
def test_every_chain_side_error_is_an_adapter_error(cls: type[Exception]) -> None:
    assert issubclass(cls, AdapterError)


def test_the_existing_relations_are_kept() -> None:
    # Every `except RpcError` / `except TxError` site keeps catching what it caught before.
    assert issubclass(RpcCallError, RpcError) and issubclass(WrongChainError, RpcError)
    assert issubclass(TxReverted, TxError)
    # A garbled answer is handled like no answer (failover, keep polling), not like a revert.
    assert issubclass(MalformedAnswer, RpcError) and not issubclass(MalformedAnswer, TxError)


# --------------------------------------------------------------------------- the parsers


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_quantities_round_trip(value: int) -> None:
    assert parse_quantity(hex(value), "q") == value
    assert parse_quantity(hex(value).upper().replace("0X", "0x"), "q") == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        16,
        True,
        1.5,
        "",
        "0x",
        "16",
        "0x+1",
        "0x 1",
        "0x1_0",
        "0xzz",
        "-0x1",
        ["0x1"],
        {"q": "0x1"},
        "0x1" + "0" * 64,
    ],
)
def test_malformed_quantities_are_one_line(value: Any) -> None:
    with pytest.raises(MalformedAnswer, match=r"^node returned a malformed gas estimate: ") as e:
        parse_quantity(value, "gas estimate")
    assert "\n" not in str(e.value)


@given(JSON)
def test_any_answer_to_a_quantity_is_an_int_or_malformed(value: Any) -> None:
    try:
        result = parse_quantity(value, "q")
    except MalformedAnswer as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 120
    else:
        assert isinstance(result, int) and 0 <= result < 2**256


@given(JSON)
def test_any_answer_to_latest_block_is_a_base_fee_or_malformed(block: Any) -> None:
    try:
        fee = parse_base_fee(block)
    except MalformedAnswer:
        return
    assert isinstance(block, dict) and isinstance(fee, int)


def test_a_block_that_is_not_a_block_is_malformed() -> None:
    with pytest.raises(MalformedAnswer, match="malformed block: None"):
        parse_base_fee(None)  # the old code: AttributeError: 'NoneType' has no attribute 'get'
    with pytest.raises(MalformedAnswer, match="baseFeePerGas"):
        parse_base_fee({"baseFeePerGas": 7})  # a JSON number, not a quantity
    assert parse_base_fee({"baseFeePerGas": "0x7"}) == 7
    assert parse_base_fee({}) == 0  # pre-London: no base fee


def test_a_good_receipt_parses_to_typed_values() -> None:
    mined = parse_receipt(TX_HASH, good_receipt())
    assert mined == MinedTx(
        TX_HASH,
        -1,
        16,
        21_000,
        10**9,
        [
            Log(
                b"\xab" * 20,
                tuple(bytes.fromhex(t[2:]) for t in good_log()["topics"]),
                bytes.fromhex(good_log()["data"][2:]),
            )
        ],
    )
    assert parse_receipt(TX_HASH, None) is None
    with pytest.raises(TxReverted, match="reverted in block 16"):
        parse_receipt(TX_HASH, good_receipt(status="0x0"))


@pytest.mark.parametrize("key", ["transactionHash", "blockNumber", "gasUsed", "status"])
def test_a_receipt_missing_a_key_is_malformed(key: str) -> None:
    receipt = good_receipt()
    del receipt[key]
    with pytest.raises(MalformedAnswer, match=f"receipt without '{key}'"):
        parse_receipt(TX_HASH, receipt)  # the old code: KeyError past every handler


@pytest.mark.parametrize(
    "changes",
    [
        {"transactionHash": "0x" + "ff" * 32},  # another transaction's receipt
        {"status": "0x2"},
        {"gasUsed": None},
        {"blockNumber": "ten"},
        {"logs": {"0": good_log()}},
        {"logs": ["not a log"]},
        {"logs": [{**good_log(), "topics": ["0x12"]}]},
        {"logs": [{**good_log(), "topics": ["0x" + "11" * 32] * 5}]},
        {"logs": [{**good_log(), "address": 5}]},
        {"logs": [{**good_log(), "data": "0xabc"}]},
        {"logs": [{k: v for k, v in good_log().items() if k != "topics"}]},
    ],
)
def test_a_receipt_of_the_wrong_shape_is_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedAnswer):
        parse_receipt(TX_HASH, good_receipt(**changes))


@given(JSON)
def test_any_answer_to_a_receipt_query_is_typed_or_malformed(answer: Any) -> None:
    try:
        mined = parse_receipt(TX_HASH, answer)
    except (MalformedAnswer, TxReverted):
        return
    assert mined is None or isinstance(mined, MinedTx)


@given(
    st.dictionaries(
        st.sampled_from(sorted(good_receipt())), JSON | st.sampled_from(["0x0", "0x1", "0x"])
    ),
    st.sets(st.sampled_from(sorted(good_receipt()))),
)
def test_any_corruption_of_a_receipt_is_typed_or_malformed(
    changes: dict[str, Any], removed: set[str]
) -> None:
    receipt = good_receipt(**changes)
    for key in removed:
        receipt.pop(key)
    try:
        mined = parse_receipt(TX_HASH, receipt)
    except (MalformedAnswer, TxReverted):
        return
    assert mined is not None and mined.hash == TX_HASH
    for entry in mined.logs:
        assert len(entry.address) == 20 and all(len(t) == 32 for t in entry.topics)


# --------------------------------------------------------------------------- a lying node


def lying_about(method: str, answer: Any) -> Any:
    return lambda request: answer if request["method"] == method else None


def test_a_garbled_fee_block_stops_a_send_before_anything_is_signed(anvil: AnvilProcess) -> None:
    with RpcProxy(anvil.rpc_url, honest) as lying:
        lying.answer = lying_about("eth_getBlockByNumber", {"baseFeePerGas": "0xnope"})

        async def scenario() -> None:
            async with JsonRpcClient([lying.url]) as client:
                engine = TxEngine(client, LocalSigner(SENDER_KEY), CHAIN_ID)
                with pytest.raises(MalformedAnswer, match="malformed block baseFeePerGas"):
                    await engine.send(RECIPIENT, b"", gas=21_000)

        trio.run(scenario)
        assert "eth_sendRawTransaction" not in lying.methods


def test_a_garbled_receipt_is_no_answer_until_the_timeout(anvil: AnvilProcess) -> None:
    """``wait`` keeps polling through a garbled receipt (as through an outage) and then gives
    the TxError the relayer handles; the old code let a KeyError out of ``wait``."""
    with RpcProxy(anvil.rpc_url, honest) as lying:
        lying.answer = lying_about("eth_getTransactionReceipt", {"blockNumber": "0x1"})

        async def scenario() -> None:
            async with JsonRpcClient([lying.url]) as client:
                engine = TxEngine(client, LocalSigner(SENDER_KEY), CHAIN_ID, escalate_after=3600)
                with pytest.raises(MalformedAnswer, match="receipt without 'transactionHash'"):
                    await engine.receipt(TX_HASH)
                sent = SentTx(0, RECIPIENT, b"", 21_000, 1, 1, [TX_HASH], trio.current_time())
                with pytest.raises(TxError, match=r"^nonce 0 not mined within 1 s"):
                    await engine.wait(sent, timeout=1, poll=0.1)

        trio.run(scenario)
        assert lying.methods.count("eth_getTransactionReceipt") > 1


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def failing_command() -> Iterator[dict[str, BaseException]]:
    """A CLI command that raises whatever the test puts in ``failure["raise"]`` inside a trio
    nursery, as ``relay`` and ``attest`` do (so it reaches ``main`` in an exception group)."""
    failure: dict[str, BaseException] = {}

    @cli_module.cli.command("fail-for-test")
    def fail_for_test() -> None:
        async def run() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(boom)

        async def boom() -> None:
            raise failure["raise"]

        trio.run(run)

    try:
        yield failure
    finally:
        cli_module.cli.commands.pop("fail-for-test")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MalformedAnswer("node returned a malformed receipt: 'x'"), 1),
        (RpcCallError("http://127.0.0.1:1", "eth_call", -32000, "execution reverted"), 1),
        (TxReverted(TX_HASH, 7, 21_000), 1),
        (TxError("nonce 3 not mined within 120 s (2 broadcasts)"), 1),
        (AdapterError("chain_getHeader on ws://127.0.0.1:1: no header"), 1),
        (RouteHalted("checkpoint of alpha no longer matches its chain"), 3),
    ],
)
def test_the_cli_gives_one_line_and_the_root_exit_code(
    failing_command: dict[str, BaseException],
    error: Exception,
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing_command["raise"] = error
    with pytest.raises(SystemExit) as exited:
        cli_module.main(["fail-for-test"])
    assert exited.value.code == code
    err = capsys.readouterr().err
    assert err == f"passerelle: {error}\n"


def test_a_subclass_of_route_halted_still_halts(capsys: pytest.CaptureFixture[str]) -> None:
    """The exit code follows the class tree, not a class name: the old comparison of
    ``__class__.__name__`` gave a subclass of RouteHalted exit 1."""

    class ReorgHalted(RouteHalted):
        pass

    assert cli_module._exit_code_for(ReorgHalted("origin reorged"), verbose=False) == 3
    assert capsys.readouterr().err == "passerelle: origin reorged\n"


def test_a_bug_is_still_an_internal_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_module._exit_code_for(KeyError("blockNumber"), verbose=False) == 70
    assert capsys.readouterr().err == "passerelle: internal error: KeyError: 'blockNumber'\n"


def test_click_errors_are_unchanged() -> None:
    assert cli_module._exit_code_for(click.exceptions.Exit(4), verbose=False) == 4
