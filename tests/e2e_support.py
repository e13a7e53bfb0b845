"""Helpers shared by the end-to-end tests on real anvil chains (tests/test_e2e_*.py).

Everything goes through the command line, as an operator would run it: the devnet of
``passerelle devnet up`` (``devnet.manager``), ``passerelle attest`` and ``passerelle relay`` as
separate processes (:class:`Procs`), ``passerelle send`` and ``passerelle status --json``.

The process harness itself (:class:`Procs`, :func:`running`, the devnet, waiting, the chain
reads) is ``benchmarks/harness.py``, shared with the relay benchmark; this module adds what only
tests need (pytest's skip and fail, the CLI's answers checked, the delivery bound of
:func:`assert_delivered_once`, :class:`TcpProxy`, :class:`Stream`) and keeps the names the test
modules import.

Fixtures are plain generator functions here (:func:`devnet`, :func:`running`); each test module
wraps them in its own ``@pytest.fixture`` so that every module gets a devnet of its own.

:class:`TcpProxy` stands between the processes and one chain's RPC, so a test can make that
endpoint go away (connections refused, open ones reset) and come back on the same port while
the chain itself keeps running.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

# benchmarks/ is not an installed package and pytest puts only tests/ on sys.path, so the repo
# root is added for benchmarks.harness (``pythonpath = ["."]`` under [tool.pytest.ini_options]
# would do the same from pyproject.toml). The root holds the installed packages' own sources,
# so appending it shadows nothing.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from cli_runner import run_cli  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import PASSERELLE, Procs, rpc, running  # noqa: E402
from light_clients.committee import address_of  # noqa: E402
from light_clients.hexstr import parse_data, to_hex  # noqa: E402
from relayer.config import (  # noqa: E402
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    Config,
    load_config,
)

__all__ = [
    "ALREADY_TOPIC",
    "DELIVERED_TOPIC",
    "HOST",
    "KILL_BATCH",
    "KILL_INFLIGHT",
    "LEDGER_GRACE",
    "PASSERELLE",
    "POS_TOOLS_STATUS_VARIABLE",
    "SEND_TIMEOUT",
    "SMALL_BATCHES",
    "DeliveryWork",
    "Procs",
    "Stream",
    "TcpProxy",
    "assert_delivered_once",
    "block_number",
    "chain_tools_required",
    "cli",
    "collapsed",
    "config_with_rpc",
    "delivered_events",
    "delivery_work",
    "devnet",
    "ensure_running",
    "inbox_logs",
    "missing_chain_tool",
    "pending_to",
    "rpc",
    "running",
    "send",
    "start_relayer",
    "statuses",
    "wait_delivered",
    "wait_for_pos_tools",
    "wait_relaying",
    "wait_until",
]

DELIVERED_TOPIC = to_hex(harness.DELIVERED)
ALREADY_TOPIC = to_hex(harness.ALREADY_DELIVERED)
HOST = "127.0.0.1"
# The SIGKILL tests' relayer: few messages per delivery transaction and few transactions in
# flight, so a kill strikes a stream of many deliveries, and the bound on what a kill may cost
# (what was in flight: 2 transactions of 5 messages) is far below what re-sending everything
# after a restart would cost.
KILL_BATCH, KILL_INFLIGHT = 5, 2
SMALL_BATCHES = ("--batch-size", str(KILL_BATCH), "--max-inflight", str(KILL_INFLIGHT))
# Set by .ci/run (and by CI services, CI=true): a chain tool that is missing fails the run.
REQUIRE_TOOLS_VARIABLES = ("PASSERELLE_REQUIRE_CHAIN_TOOLS", "CI")


# --------------------------------------------------------------------------- missing tools


def chain_tools_required() -> bool:
    """True in CI: there, a test that needs anvil, chopsticks or node must run, not skip."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
        for name in REQUIRE_TOOLS_VARIABLES
    )


def missing_chain_tool(reason: str) -> NoReturn:
    """Skip a test whose chain tool is not installed, on a developer's machine; fail it in CI.

    A skip exits 0: in CI a missing anvil would otherwise turn every chain test into a green
    run that tested nothing.
    """
    if chain_tools_required():
        pytest.fail(f"{reason} (chain tools are required here: {REQUIRE_TOOLS_VARIABLES} set)")
    pytest.skip(reason)


# Set by `make test` and `make test-fast` (Makefile, pytest-beside-pos-tools): the file the PoS
# tools' build, running beside pytest, writes its exit status to when it ends.
POS_TOOLS_STATUS_VARIABLE = "PASSERELLE_POS_TOOLS_STATUS"
# The build takes ~1-2 min on a quiet fresh clone, 6 min was measured at load 12: a build
# still going after ten minutes is stuck, and the whole run's budget is gone anyway.
POS_TOOLS_WAIT = 600.0


def wait_for_pos_tools(timeout: float = POS_TOOLS_WAIT, poll: float = 1.0) -> None:
    """Wait until ``make pos-tools``, which ``make test`` runs beside pytest, has finished.

    The proof-of-stake tools' install (``devnet/npm-pos``: ``npm ci`` and native modules) is
    the longest part of a fresh clone's setup and only the PoS module needs it, so ``make
    test`` starts pytest without waiting for it and passes, in
    :data:`POS_TOOLS_STATUS_VARIABLE`, the file the build writes its exit status to when it ends
    (renamed into place, so it is never read half-written); its output is next to it
    (``pos-tools.log``). Without the variable (pytest run by hand) this returns at once, and
    the tools are simply there or not (:func:`missing_chain_tool`).

    A build that failed, wrote something other than a number, or is not done after
    ``timeout`` seconds fails the calling test (never skips: a skipped PoS module would turn a
    broken install into a green run), naming the log and quoting its last lines.
    """
    variable = os.environ.get(POS_TOOLS_STATUS_VARIABLE, "").strip()
    if not variable:
        return
    status = Path(variable)
    log = status.with_name("pos-tools.log")
    deadline = time.monotonic() + timeout
    # A file written by another process when it exits: polling it is the simple, portable
    # wait (no inotify); a second's delay is nothing next to the build's minutes.
    while not status.exists():
        if time.monotonic() >= deadline:
            pytest.fail(f"`make pos-tools` is still running after {timeout:.0f} s: see {log}")
        time.sleep(poll)
    text = status.read_text(encoding="utf-8", errors="replace").strip()
    if text == "0":
        return
    try:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    except OSError as error:
        tail = [f"(its log {log} cannot be read: {error.strerror})"]
    what = f"exit {text}" if text.isdigit() else f"an unreadable status {text[:40]!r}"
    pytest.fail(f"`make pos-tools` failed ({what}); the end of {log}:\n" + "\n".join(tail))


# --------------------------------------------------------------------------- processes

_RELAYING_BEFORE: dict[subprocess.Popen[bytes], int] = {}
"""For each relayer :func:`start_relayer` started: how many RELAYING lines its log held then."""


def start_relayer(procs: Procs, *extra: str) -> subprocess.Popen[bytes]:
    """``procs.start_relayer(*extra)``, remembering how often the relayer log already said
    :data:`benchmarks.harness.RELAYING`: the log is appended to across restarts, so "the log
    says relaying" proves nothing about the process just started; :func:`wait_relaying` waits
    for one line more, this process's own."""
    before = procs.log("relayer").count(harness.RELAYING)
    started = procs.start_relayer(*extra)
    _RELAYING_BEFORE[started] = before
    return started


def wait_relaying(procs: Procs, timeout: float = 30) -> None:
    """Until the running relayer has logged RELAYING itself: past its start-up (ledger loaded,
    trio's signal handling in place, so a SIGTERM now is a clean stop, not Python's default
    death). It must have been started by :func:`start_relayer`, or which lines are its own is
    unknown."""
    current = procs.running["relayer"]
    if current not in _RELAYING_BEFORE:
        raise AssertionError("the relayer was not started by e2e_support.start_relayer")
    procs.wait_relaying(timeout=timeout, starts=_RELAYING_BEFORE[current])


def ensure_running(procs: Procs) -> None:
    """The committee's attesters and a relayer running, the relayer past its start-up: the
    set-up of a test that shares a module's processes. Whatever an earlier test stopped, or
    left dead by failing half-way, is started again, so one failure stays one failure and not
    a cascade of 90 s delivery waits in the tests after it. A relayer already running is kept,
    whatever its options."""
    for index in range(harness.ATTESTERS):
        attester = procs.running.get(f"attester{index}")
        if attester is None or attester.poll() is not None:
            procs.start_attester(index)
    relayer = procs.running.get("relayer")
    if relayer is None or relayer.poll() is not None:
        start_relayer(procs)
    wait_relaying(procs)


def devnet(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    assethub: bool = False,
    block_time: float = 0.5,
) -> Iterator[Path]:
    """Body of a module-scoped fixture: a fresh devnet, its config path, ``down`` at the end.

    Without ``assethub`` only the two anvil chains run (the EVM route's tests need no more).
    ``block_time``: the anvil chains' seconds per block. The devnet's EVM finality is
    ``confirmations:3``, so every "until final" wait is three blocks, and the relayer and the
    attesters poll all the while: half-second blocks (the devnet's own default is one second)
    took the five modules that use this from 264 s to 204 s alone and from 188 to 172 CPU s
    (measured 2026-12-08; quarter-second blocks: 188 s and 191 CPU s: more blocks
    to read). The chain code under test is the same at any pace."""
    with harness.devnet(
        tmp_path_factory.mktemp("devnet"), assethub=assethub, block_time=block_time
    ) as config:
        yield config


# --------------------------------------------------------------------------- the CLI


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PASSERELLE, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


SEND_TIMEOUT = 120.0
"""How long one :func:`send` may take before it fails the test: :func:`cli`'s subprocess bound."""

_SENT_TO: dict[str, int] = {}
"""The destination domain of every message :func:`send` sent in this process, by id. A message
id hashes its destination, so an id names one destination whichever devnet sent it."""


def send(config: Path, origin: str, destination: str, *extra: str) -> list[dict[str, Any]]:
    """``passerelle send --json``, its messages. In this process (tests/cli_runner.py: the same
    ``main()`` the console script calls), as :func:`statuses` does: a ``passerelle`` process
    spends ~1.1 CPU s importing before it sends (measured: 9 sends, 9.9 CPU s, a third of
    tests/test_e2e_resilience.py's CPU). The process boundary stays tested where it matters:
    the attesters and relayers here are processes, and so is :func:`cli`. Thread-safe
    (:class:`Stream` sends from several threads).

    What the subprocess gave and is kept: a hang fails the test after :data:`SEND_TIMEOUT`
    instead of holding CI to its limit, and a traceback the command wrote to its stderr fails
    it even with exit status 0. Lost with the process: log records (an exception logged and
    swallowed on the way to a successful send) now go to pytest's log capture, not to
    ``result.stderr``, so that check no longer sees them."""
    result = run_cli(
        "send",
        "--config",
        config,
        "--from",
        origin,
        "--to",
        destination,
        "--json",
        *extra,
        timeout=SEND_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    # A successful send always prints its messages. Without this an empty capture (output lost
    # on the way) returned [], and every wait and check on those ids then held vacuously:
    # wait_delivered(config, []) is done at once, assert_delivered_once(..., []) passes.
    expected = _count_of(extra)
    assert messages if expected is None else len(messages) == expected, (
        f"send printed {len(messages)} message(s), expected {expected or 'at least one'}: "
        f"stdout {result.stdout[:200]!r}, stderr {result.stderr[:200]!r}"
    )
    _SENT_TO.update((m["id"], m["destination"]) for m in messages)
    return messages


def _count_of(extra: tuple[str, ...]) -> int | None:
    """The ``--count`` of a ``send`` command line (``--count N`` or ``--count=N``), if given."""
    for i, arg in enumerate(extra):
        if arg == "--count" and i + 1 < len(extra):
            return int(extra[i + 1])
        if arg.startswith("--count="):
            return int(arg.removeprefix("--count="))
    return None


def statuses(config: Path) -> dict[str, dict[str, Any]]:
    """``passerelle status --json`` by message id. In this process (tests/cli_runner.py): the
    waits below ask it again and again, and a process start each time cost a core-second."""
    result = run_cli("status", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in map(json.loads, result.stdout.splitlines())}


LEDGER_GRACE = 10.0
"""Seconds :func:`wait_delivered` gives the ledger after the events: five polls of the slowest
relayer the tests run (tests/test_pos_chain.py's, 2 s)."""


def wait_delivered(
    config: Path,
    ids: list[str],
    procs: Procs,
    timeout: float = 90,
    *,
    settle: float | None = None,
    since: Mapping[str, int] | None = None,
    poll: float = 0.3,
) -> None:
    """Every id ``delivered`` in the ledger and flagged delivered on chain, within ``timeout``.

    First waits (cheaply, by RPC, every ``poll`` seconds) for each id's Delivered event on some
    chain, then for ``passerelle status --json`` to agree, within ``settle`` seconds of the last
    event if given: the relayer records a mined delivery at once.

    ``since`` (chain name → block), when the caller recorded it before sending, bounds the
    event wait to those chains' Inboxes from those blocks: an event of a message sent after
    that block can only be in a later block. Without it every Inbox is read from block 0 at
    each look, which is cheap on anvil but not on the PoS devnet's EthereumJS client: 0.10.5
    decodes every block of the range (and rebuilds its fork parameters for each header), so
    ~200 such looks were measured at ~17 CPU s, over half that client's CPU in its module.
    Either way the ledger check that follows is the same. A ``since`` that leaves out the
    destination of an id :func:`send` sent fails at once: its event would never be looked for,
    and the wait would burn its whole ``timeout`` before the ledger's answer.

    Once the events are in, the ledger gets at least :data:`LEDGER_GRACE` (``settle`` instead,
    if given) to agree, even past ``timeout``: events that arrive at the deadline's last second
    are a delivery, and the relayer records it on its next poll.
    """
    deadline = time.monotonic() + timeout
    chains = load_config(config)
    ranges = (
        dict(since)
        if since is not None
        else {c.name: 0 for c in chains.chains if "inbox" in c.contracts}
    )
    names = {c.domain: c.name for c in chains.chains}
    destinations = {i: names.get(_SENT_TO[i]) for i in ids if i in _SENT_TO}
    uncovered = {i: name for i, name in destinations.items() if name not in ranges}
    if uncovered:
        pytest.fail(f"since={dict(ranges)} leaves out these messages' destinations: {uncovered}")
    wanted = set(ids)

    def arrived() -> bool:
        found = {i for name, block in ranges.items() for i in delivered_events(chains, name, block)}
        return wanted <= found

    with suppress(harness.HarnessTimeout):  # then the ledger's answer is the one reported
        harness.wait_for(arrived, "the Delivered events", timeout, poll)
        arrived_at = time.monotonic()
        deadline = (
            arrived_at + settle if settle is not None else max(deadline, arrived_at + LEDGER_GRACE)
        )
    rows: dict[str, dict[str, Any]] = {}
    while True:
        rows = statuses(config)
        if all(rows.get(i, {}).get("status") == "delivered" for i in ids):
            assert all(rows[i]["delivered_on_chain"] for i in ids)
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = {
        i: rows.get(i, {}).get("status")
        for i in ids
        if rows.get(i, {}).get("status") != "delivered"
    }
    pytest.fail(f"not delivered: {missing}\nrelayer log:\n{collapsed(procs.log('relayer'))}")


def collapsed(log: str, limit: int = 4000) -> str:
    """The end of a log, runs of lines that differ only in their timestamp shown once."""
    out: list[str] = []
    previous, repeats = "", 0
    for line in log.splitlines():
        message = line[24:]  # after "2026-01-01 00:00:00,000 "
        if message == previous:
            repeats += 1
            continue
        if repeats:
            out.append(f"    (and {repeats} more like it)")
        out.append(line)
        previous, repeats = message, 0
    if repeats:
        out.append(f"    (and {repeats} more like it)")
    return "\n".join(out)[-limit:]


# --------------------------------------------------------------------------- the chains


def inbox_logs(
    config: Config, chain: str, topic: str, since: int = 0, upto: int | None = None
) -> Any:
    """The logs with ``topic`` (hex) of ``chain``'s Inbox, in blocks ``since`` to ``upto``
    (latest)."""
    target = config.chain(chain)
    topic_bytes = parse_data(topic, "topic", 32)
    return harness.logs(target.rpc[0], target.contract("inbox"), topic_bytes, since, upto)


def delivered_events(config: Config, chain: str, since: int = 0) -> list[str]:
    """Every message id the chain's Inbox emitted Delivered for from block ``since`` on
    (duplicates kept)."""
    return [entry["topics"][1] for entry in inbox_logs(config, chain, DELIVERED_TOPIC, since=since)]


def block_number(config: Config, chain: str) -> int:
    return harness.block_number(config.chain(chain).rpc[0])


def mined(url: str, tx: Mapping[str, Any], timeout: float = 30) -> dict[str, Any]:
    """``tx`` sent from an unlocked dev account (``eth_sendTransaction``) and its receipt once
    mined. Automining, anvil answers with the hash as soon as the transaction is in, and the
    receipt follows, later on a loaded machine (bounded: one never mined fails the test).
    Anvil also puts every transaction already waiting into the block it mines, so a test
    that needs a block per transaction waits for each before sending the next."""
    sent = rpc(url, "eth_sendTransaction", [dict(tx)])
    deadline = time.monotonic() + timeout
    while (receipt := rpc(url, "eth_getTransactionReceipt", [sent])) is None:
        assert time.monotonic() < deadline, f"{sent} not mined"
        time.sleep(0.02)
    return dict(receipt)


def pending_to(url: str, address: bytes) -> bool:
    """True while the node's pool holds a transaction to ``address`` (anvil's txpool_content)."""
    pool = rpc(url, "txpool_content", [])["pending"]
    wanted = to_hex(address)
    return any(
        str(tx.get("to", "")).lower() == wanted for txs in pool.values() for tx in txs.values()
    )


@dataclass(frozen=True)
class DeliveryWork:
    """What the relayer made one chain's Inbox do in a range of blocks, as the chain says.

    The Inbox emits ``Delivered`` at most once per id whatever the relayer does, so "exactly
    once" alone cannot tell a careful relayer from one that re-sends everything after each
    restart. These counts can: every message the relayer sends again costs an
    ``AlreadyDelivered`` event, and every transaction of the relayer's account (its nonce) that
    delivered nothing was wasted.
    """

    delivered: Counter[str]  # message id -> Delivered events
    already: Counter[str]  # message id -> AlreadyDelivered events: sent again, skipped
    transactions: int  # the relayer account's transactions mined (its nonce went up by this)
    useful: int  # of them, those that delivered at least one message

    @property
    def wasted(self) -> int:
        """Transactions that delivered nothing (all re-sends, or reverted)."""
        return self.transactions - self.useful

    def __str__(self) -> str:
        resent = {i[:10]: n for i, n in self.already.items()}
        return (
            f"{sum(self.delivered.values())} delivered, {sum(self.already.values())} re-sent "
            f"{resent}, {self.transactions} transactions of which {self.wasted} wasted"
        )


def delivery_work(config: Config, chain: str, since: int) -> DeliveryWork:
    """:class:`DeliveryWork` on ``chain`` from block ``since`` to the newest block."""
    url = config.chain(chain).rpc[0]
    upto = block_number(config, chain)
    assert config.relayer_key is not None
    relayer = to_hex(address_of(config.relayer_key.load()))

    def nonce(block: int) -> int:
        return (
            0 if block < 0 else int(rpc(url, "eth_getTransactionCount", [relayer, hex(block)]), 16)
        )

    delivered = inbox_logs(config, chain, DELIVERED_TOPIC, since, upto)
    already = inbox_logs(config, chain, ALREADY_TOPIC, since, upto)
    return DeliveryWork(
        delivered=Counter(entry["topics"][1] for entry in delivered),
        already=Counter(entry["topics"][1] for entry in already),
        transactions=nonce(upto) - nonce(since - 1),
        useful=len({entry["transactionHash"] for entry in delivered}),
    )


def assert_delivered_once(
    config: Config,
    chain: str,
    ids: Iterable[str],
    *,
    since: int,
    faults: int = 0,
    batch_size: int = RELAY_BATCH_SIZE,
    max_inflight: int = RELAY_MAX_INFLIGHT,
) -> DeliveryWork:
    """Every id delivered once on ``chain`` since block ``since``, and the redundant work the
    relayer did there bounded by the ``faults`` (relayer restarts, lost endpoints) it met.

    The bound (docs/relayer.md): a fault can cost at most what was in flight when it struck,
    ``max_inflight`` delivery transactions of up to ``batch_size`` messages. So at most
    ``faults * max_inflight`` transactions that deliver nothing, at most
    ``faults * max_inflight * batch_size`` ``AlreadyDelivered`` events, and no message sent
    more than ``faults`` times in vain. With no fault, no redundant work at all.
    """
    work = delivery_work(config, chain, since)
    twice = {i: n for i, n in work.delivered.items() if n > 1}
    assert not twice, f"{chain}: delivered more than once: {twice}"
    missing = set(ids) - set(work.delivered)
    assert not missing, f"{chain}: no Delivered event for {sorted(missing)}"
    resent = sum(work.already.values())
    said = (
        f"{chain}: after {faults} fault(s) with {max_inflight} transaction(s) of up to "
        f"{batch_size} in flight: {work}"
    )
    assert resent <= faults * max_inflight * batch_size, f"{resent} messages re-sent; {said}"
    assert work.wasted <= faults * max_inflight, f"{work.wasted} transactions wasted; {said}"
    assert max(work.already.values(), default=0) <= faults, f"a message re-sent twice; {said}"
    return work


def config_with_rpc(config_path: Path, chain: str, url: str, name: str) -> Path:
    """A copy of the config, written beside it as ``name``, where ``chain``'s rpc is ``url``.

    Beside the original, so relative paths (the ledger, the checkpoint store) still name the
    same files: processes run on the copy share the devnet's ledger and checkpoints.
    """
    text = config_path.read_text(encoding="utf-8")
    chains = tomllib.loads(text)["chains"]
    (old,) = [c["rpc"] for c in chains if c["name"] == chain]
    assert len(old) == 1, f"{chain} has several endpoints: {old}"
    line = f"rpc = [{json.dumps(old[0])}]"
    assert text.count(line) == 1, f"{line!r} is not exactly once in {config_path}"
    copy = config_path.with_name(name)
    copy.write_text(text.replace(line, f"rpc = [{json.dumps(url)}]"), encoding="utf-8")
    rewritten = {c["name"]: c["rpc"] for c in tomllib.loads(copy.read_text())["chains"]}
    assert rewritten == {c["name"]: [url] if c["name"] == chain else c["rpc"] for c in chains}
    return copy


# --------------------------------------------------------------------------- a TCP proxy


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP reset, not a polite end of stream."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`stop` and :meth:`start` it at will.

    Threads and blocking sockets: one thread accepts, one thread per connection pumps bytes
    both ways. :meth:`stop` closes the listener (new connections are refused) and resets every
    open connection; :meth:`start` listens again on the same port. Every thread polls a stop
    flag, so no socket is ever closed under a thread blocked on it.
    """

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self.port = 0  # chosen by the kernel on the first start, then kept
        self.connections = 0  # accepted, over the proxy's life
        self.resets = 0  # open connections cut by stop()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self.port, "start the proxy first"
        return f"http://{HOST}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        assert self._listener is None, "already listening"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((HOST, self.port))
        except OSError:
            listener.close()
            raise
        listener.listen(128)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping = threading.Event()
        self._spawn(self._accept, listener, self._stopping)

    def stop(self) -> None:
        """Refuse new connections and reset the open ones; returns once all are closed."""
        if self._listener is None:
            return
        self._stopping.set()
        # Join before closing: the accept thread is the only user of the listener.
        while True:
            with self._lock:
                threads, self._threads = self._threads, []
            if not threads:
                break
            for thread in threads:
                thread.join(timeout=10)
                assert not thread.is_alive(), f"proxy thread {thread.name} did not stop"
        self._listener.close()
        self._listener = None

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _accept(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            with self._lock:
                self.connections += 1
            self._spawn(self._pump, client, stopping)

    def _pump(self, client: socket.socket, stopping: threading.Event) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):  # forward each write at once, as a direct link would
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = {client: upstream, upstream: client}
        cut = False
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            try:
                while not (cut := stopping.is_set()):
                    for key, _ in selector.select(timeout=0.05):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        peer[source].sendall(data)
            except OSError:
                return
            finally:
                if cut:
                    with self._lock:
                        self.resets += 1
                    _reset(client)
                else:
                    client.close()
                upstream.close()


# --------------------------------------------------------------------------- waiting, streams


def wait_until(condition: Any, what: str, timeout: float = 60, poll: float = 0.3) -> None:
    """Poll ``condition()`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    try:
        harness.wait_for(condition, what, timeout, poll)
    except harness.HarnessTimeout as timed_out:
        pytest.fail(str(timed_out))


class Stream:
    """Sends messages on each of ``routes`` in the background until :meth:`finish`.

    One thread per route (routes from different origins do not wait for each other), each
    sending rounds of one ``passerelle send --count N`` followed by ``gap`` seconds of pause.
    ``rounds`` records when each send started and ended (monotonic seconds), so a test can tell
    which ones overlapped an event.
    """

    def __init__(
        self, config: Path, routes: list[tuple[str, str]], *, count: int, gap: float
    ) -> None:
        self.config, self.count, self.gap = config, count, gap
        self.sent: dict[tuple[str, str], list[str]] = {route: [] for route in routes}
        self.rounds: list[tuple[float, float]] = []
        self.errors: list[BaseException] = []
        self._finish = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=route, daemon=True) for route in routes
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def ids(self, origin: str, destination: str) -> list[str]:
        with self._lock:
            return list(self.sent[origin, destination])

    def _run(self, origin: str, destination: str) -> None:
        try:
            while not self._finish.is_set():
                began = time.monotonic()
                body = f"stream {origin}->{destination} {len(self.sent[origin, destination])}"
                out = send(
                    self.config, origin, destination, "--body", body, "--count", str(self.count)
                )
                assert len(out) == self.count, out
                with self._lock:
                    self.sent[origin, destination] += [m["id"] for m in out]
                    self.rounds.append((began, time.monotonic()))
                self._finish.wait(self.gap)
        except BaseException as exc:  # re-raised in the test's thread by finish()
            with self._lock:
                self.errors.append(exc)

    def finish(self, timeout: float = 120) -> dict[tuple[str, str], list[str]]:
        """Stop after the sends in progress; every id sent, by route."""
        self._finish.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a sending thread did not finish"
        if self.errors:
            raise self.errors[0]
        return self.sent
