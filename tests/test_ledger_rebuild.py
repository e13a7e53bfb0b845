"""``passerelle ledger rebuild`` on real anvil chains: a lost ledger recovered message for message.

The operator's story end to end (:func:`test_a_deleted_ledger_is_rebuilt_message_for_message`):
traffic both ways, some of it delivered and some still waiting (the attesters stopped before
it), the relayer stopped, the ledger deleted; a first rebuild meets a dead destination RPC and
stops, resumable; a second finishes; the rebuilt ledger equals the lost one in every field a
chain can tell; a relayer started on it delivers the waiting messages exactly once and sends
nothing that was delivered before.

Then the hostile cases, in process on the same chains: an origin endpoint whose logs are
missing one message (the scan's reconciliation refuses the chunk: nothing short is recorded),
and a destination endpoint that answers "delivered" for everything (not believed: ``delivered``
is written only from storage proven under the final header).

The Asset Hub legs (remarks scanned, deliveries read from replay-guard items) are rebuilt on
tests/test_e2e_substrate.py's devnet, from its first messages
(``test_a_lost_ledger_is_rebuilt_from_asset_hub_and_alpha``): a chopsticks devnet and a set of
processes of their own here cost about a minute of CPU, most of it repeating that module's
traffic.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_support import (
    ALREADY_TOPIC,
    assert_delivered_once,
    block_number,
    cli,
    config_with_rpc,
    devnet,
    inbox_logs,
    running,
    send,
    wait_until,
)
from test_e2e_substrate import (
    assert_rebuilt,
    delete_ledger,
    ledger_snapshot,
    wait_ledger_delivered,
)

from adapters.evm.chain import EvmChain
from relayer import rebuild as rebuild_module
from relayer.config import Config, load_config
from relayer.family import family_of
from relayer.ledger import MessageStatus, open_ledger
from relayer.rebuild import RebuildRefused, rebuild

pytestmark = pytest.mark.chain

FINALITY_BLOCKS = 4  # the devnet's EVM policy: 3 confirmations, and the block itself


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from devnet(tmp_path_factory)


def _send_both(config: Path, *sends: tuple[str, ...]) -> list[dict[str, Any]]:
    """``passerelle send`` once per ``(origin, destination, *options)``, all at once (each
    origin's client account is its own: no two sends share a nonce); the messages, in order."""
    with ThreadPoolExecutor(len(sends)) as pool:
        futures = [pool.submit(send, config, *args) for args in sends]
        return [message for future in futures for message in future.result()]


def _recorded(location: str, message_id: str) -> bool:
    with open_ledger(location) as ledger:
        return ledger.get(message_id) is not None


def _wait_final(config: Config, chain: str) -> None:
    """Until everything sent to ``chain`` so far is in a block its finality policy accepts."""
    target = block_number(config, chain) + FINALITY_BLOCKS
    wait_until(lambda: block_number(config, chain) >= target, f"{chain} to pass block {target}")


def _traffic_then_lose(
    config_path: Path,
    logs: Path,
    before: tuple[tuple[str, ...], tuple[str, ...]],
    after: tuple[tuple[str, ...], tuple[str, ...]],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The sends ``before`` delivered; then, the attesters stopped (no checkpoint: nothing more
    can be delivered), the sends ``after`` recorded by the relayer and left waiting; the relayer
    stopped and the ledger deleted. The lost ledger's rows, and the waiting messages."""
    config = load_config(config_path)
    with running(config_path, logs) as procs:
        delivered = _send_both(config_path, *before)
        wait_ledger_delivered(config, [m["id"] for m in delivered], procs)
        for index in range(3):
            assert procs.stop(f"attester{index}") == 0
        waiting = _send_both(config_path, *after)
        wait_until(
            lambda: all(_recorded(config.ledger, m["id"]) for m in waiting),
            "the relayer to record the waiting messages",
        )
        assert procs.stop("relayer") == 0
    lost = ledger_snapshot(config.ledger)
    assert {lost[m["id"]]["status"] for m in delivered} == {MessageStatus.DELIVERED}
    assert {lost[m["id"]]["status"] for m in waiting} == {MessageStatus.FINAL}
    delete_ledger(config.ledger)
    return lost, waiting


def test_a_deleted_ledger_is_rebuilt_message_for_message(
    devnet_config: Path, tmp_path: Path
) -> None:
    """The operator's story on alpha ⇄ beta (the module docstring); every step through the
    command line as an operator runs it."""
    config = load_config(devnet_config)
    lost, waiting = _traffic_then_lose(
        devnet_config,
        tmp_path / "logs",
        (
            ("alpha", "beta", "--body", "before", "--count", "3"),
            ("beta", "alpha", "--body", "before", "--count", "2"),
        ),
        (
            ("alpha", "beta", "--body", "after", "--count", "2"),
            ("beta", "alpha", "--body", "after"),
        ),
    )

    # beta's endpoint is dead: alpha is rebuilt, beta is not; one line, exit 1, resumable.
    dead = config_with_rpc(devnet_config, "beta", "http://127.0.0.1:9", "dead-beta.toml")
    first = cli(dead, "ledger", "rebuild", "--timeout", "1")
    assert first.returncode == 1, first.stderr
    assert "INCOMPLETE" in first.stdout
    errors = [line for line in first.stderr.splitlines() if line.startswith("passerelle:")]
    assert len(errors) == 1 and "beta" in errors[0] and "again to resume" in errors[0], errors
    partial = ledger_snapshot(config.ledger)
    assert {r["origin"] for r in partial.values()} == {config.chain("alpha").domain}

    second = cli(devnet_config, "ledger", "rebuild", "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["complete"] is True and summary["error"] is None
    # The summary counts what the lost ledger held, route by route.
    names = {c.domain: c.name for c in config.chains}
    expected: dict[tuple[str, str], dict[str, int]] = {}
    for row in lost.values():
        route = expected.setdefault(
            (names[row["origin"]], names[row["destination"]]),
            {"messages": 0, "delivered": 0, "pending": 0, "skipped": 0},
        )
        route["messages"] += 1
        route["delivered" if row["status"] == MessageStatus.DELIVERED else "pending"] += 1
    assert {
        (r["origin"], r["destination"]): {
            k: r[k] for k in ("messages", "delivered", "pending", "skipped")
        }
        for r in summary["routes"]
    } == expected
    assert expected[("alpha", "beta")]["pending"] == 2
    assert expected[("beta", "alpha")]["pending"] == 1

    assert_rebuilt(config.ledger, lost)
    rebuilt = ledger_snapshot(config.ledger)
    # The scan cursors let a relayer carry on from the final heads the rebuild reached.
    with open_ledger(config.ledger) as ledger:
        for name in ("alpha", "beta"):
            cursor = ledger.get_cursor(config.chain(name).domain)
            assert cursor is not None and cursor.next_block == summary["cursors"][name]

    # A ledger that holds messages is never written over, not even by a finished rebuild.
    again = cli(devnet_config, "ledger", "rebuild")
    assert again.returncode == 1 and "already holds" in again.stderr, again.stderr
    assert ledger_snapshot(config.ledger) == rebuilt

    # A relayer on the rebuilt ledger: the waiting messages once, nothing delivered again.
    since = {name: block_number(config, name) + 1 for name in ("alpha", "beta")}
    with running(devnet_config, tmp_path / "logs-after") as procs:
        wait_ledger_delivered(config, [m["id"] for m in waiting], procs)
    for name in ("beta", "alpha"):
        ids = [m["id"] for m in waiting if m["destination"] == config.chain(name).domain]
        # Each once, and no redundant work at all (no fault: no AlreadyDelivered, no wasted
        # transaction) ...
        work = assert_delivered_once(config, name, ids, since=since[name])
        # ... and nothing that was delivered before the ledger was lost delivered again.
        assert set(work.delivered) == set(ids), f"{name}: delivered again: {work}"
        assert not inbox_logs(config, name, ALREADY_TOPIC, since[name])


@pytest.fixture(scope="module")
def unrelayed(devnet_config: Path) -> str:
    """A message alpha → beta that no relayer carries (none runs once the story test is over),
    final on alpha; its id. Shared by the in-process tests, which never deliver it."""
    (sent,) = send(devnet_config, "alpha", "beta", "--body", "nobody relays this")
    _wait_final(load_config(devnet_config), "alpha")
    return str(sent["id"])


@pytest.fixture
def fresh(devnet_config: Path, tmp_path: Path) -> Config:
    """The devnet's config with a new, empty ledger of the test's own."""
    return dataclasses.replace(load_config(devnet_config), ledger=str(tmp_path / "l.db"))


def test_an_origin_endpoint_that_drops_a_log_gets_nothing_recorded(
    fresh: Config, unrelayed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alpha's endpoint leaves out the newest Dispatch log. Its nonces still run gapless, so
    only the outbox's proven count can tell: the chunk is refused (AdapterError), again and
    again, and the rebuild stops incomplete with none of alpha's messages recorded (a ledger one
    message short would be "complete" and the message lost). The honest endpoint back, running
    the rebuild again resumes it and finds every message."""
    config = fresh
    honest = EvmChain.dispatches

    async def dropping(
        self: EvmChain, outbox: bytes, first: int, last: int, **options: Any
    ) -> Any:  # options (answered=, ...) pass through: the origin blames who answered
        return (await honest(self, outbox, first, last, **options))[:-1]

    monkeypatch.setattr(EvmChain, "dispatches", dropping)
    with open_ledger(config.ledger) as ledger:
        summary = trio.run(lambda: rebuild(config, ledger, timeout=2, progress=lambda _: None))
        assert not summary.complete
        assert summary.error is not None and "origin alpha" in summary.error
        assert "logs missing, altered or invented" in summary.error
        assert ledger.messages(origin=config.chain("alpha").domain) == []
        assert ledger.get_cursor(config.chain("alpha").domain) is None
    monkeypatch.setattr(EvmChain, "dispatches", honest)
    with open_ledger(config.ledger) as ledger:
        summary = trio.run(lambda: rebuild(config, ledger, progress=lambda _: None))
        assert summary.complete
        record = ledger.get(unrelayed)
        assert record is not None and record.status == MessageStatus.FINAL


def test_a_destination_endpoint_claiming_delivery_is_not_believed(
    fresh: Config, unrelayed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """beta's endpoint answers "true" to every ``eth_call`` to the Inbox. Believed, the
    waiting message would be rebuilt ``delivered`` — terminal: no relayer would ever send it.
    The rebuild reads beta's Inbox storage proven under its final header instead."""
    config, waiting = fresh, unrelayed
    beta = config.chain("beta")
    honest = EvmChain.call_many

    async def lying(self: EvmChain, to: bytes, datas: Any, block: Any = "latest") -> Any:
        if to[-20:] == beta.contract("inbox")[-20:]:
            return [(1).to_bytes(32, "big") for _ in datas]  # "true", whatever is asked
        return await honest(self, to, datas, block)

    monkeypatch.setattr(EvmChain, "call_many", lying)
    with open_ledger(config.ledger) as ledger:
        message = ledger.get(waiting)
        assert message is None
        summary = trio.run(lambda: rebuild(config, ledger, progress=lambda _: None))
        assert summary.complete
        record = ledger.get(waiting)
        assert record is not None and record.status == MessageStatus.FINAL
        # The lie is live: the family's own (eth_call) read believes it.
        assert trio.run(family_of(beta).delivered, config, beta, [record.message]) == [True]
        delivered = ledger.messages(status=MessageStatus.DELIVERED, destination=beta.domain)
        assert all("proven" in (r.reason or "") for r in delivered)


def test_a_ledger_with_messages_is_refused_before_any_chain_is_asked(
    fresh: Config, unrelayed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even a rebuild's own finished ledger is written over: a ledger may hold history
    (failed, skipped, transactions) the chains cannot give back, and two pasts must not mix."""
    config = fresh
    with open_ledger(config.ledger) as ledger:
        trio.run(lambda: rebuild(config, ledger, progress=lambda _: None))
        before = ledger.messages(limit=100_000)
        assert unrelayed in {r.id for r in before}

        def no_chain(*_: object) -> None:
            raise AssertionError("a chain was asked")

        monkeypatch.setattr(rebuild_module, "family_of", no_chain)
        with pytest.raises(RebuildRefused, match="already holds"):
            trio.run(lambda: rebuild(config, ledger, progress=lambda _: None))
        assert ledger.messages(limit=100_000) == before
