"""The process harness shared by the end-to-end tests and the relay benchmark.

A devnet (``devnet.manager``), ``passerelle attest`` and ``passerelle relay`` as separate
processes, each logging to a file (:class:`Procs`), waiting on them (:func:`wait_for`), and the
few chain reads both need (the Inbox's ``Delivered`` events, a block number), all over the
project's one JSON-RPC envelope (:mod:`adapters.jsonrpc`).

Used by ``tests/e2e_support.py`` and ``benchmarks/bench_relay/``. It lives here rather than in
the tests because it has no test framework in it: a failure is a :class:`HarnessError` (a
timeout, a process that exited), which the tests turn into ``pytest.fail`` and the benchmark
into its exit message, so ``python -m benchmarks`` never imports pytest or the tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters.jsonrpc import RpcCallError, call_sync
from devnet import manager
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex

PASSERELLE = str(Path(sys.executable).parent / "passerelle")
# The relayer logs this once its ledger is loaded and it has started relaying.
RELAYING = "relaying: origins"
# The --poll (seconds) of the processes the end-to-end tests start, the defaults of Procs. The
# benchmark passes its own (by default the CLI's, relayer.config: those are what it measures).
# Not shorter: an idle attester costs ~6 % of a core and a relayer ~11 % at 0.5 s / 0.3 s, and
# the suite is CPU-bound on CI's two cores; the anvil chains make a block a second anyway.
E2E_ATTESTER_POLL = 1.0
E2E_RELAYER_POLL = 0.5
ATTESTERS = 3  # the devnet's committee: three keys, threshold 2
STOP_TIMEOUT = 20.0  # seconds a process has to exit after its signal, and again after SIGKILL

# The Inbox's events, as topics (keccak256 of the signature).
DELIVERED = keccak256(b"Delivered(bytes32,uint32,uint32)")
ALREADY_DELIVERED = keccak256(b"AlreadyDelivered(bytes32)")
HANDLE_FAILED = keccak256(b"HandleFailed(bytes32,bytes)")


class HarnessError(RuntimeError):
    """A process the harness started exited, or something waited for did not happen."""


class HarnessTimeout(HarnessError):
    """:func:`wait_for` ran out of time."""


# --------------------------------------------------------------------------- processes


class Procs:
    """Long-running ``passerelle`` processes, each logging to ``logs/<name>.log``, each stopped
    by its own pid (never by name)."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``passerelle <args> --config <config>`` in a session of its own, as ``name``."""
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [PASSERELLE, *args, "--config", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.running[name] = proc
        return proc

    def start_attester(
        self, index: int, *, poll: float = E2E_ATTESTER_POLL
    ) -> subprocess.Popen[bytes]:
        """``passerelle attest --index <index>``, as ``attester<index>``."""
        return self.start(f"attester{index}", "attest", "--index", str(index), "--poll", str(poll))

    def start_relayer(
        self, *extra: str, name: str = "relayer", poll: float = E2E_RELAYER_POLL
    ) -> subprocess.Popen[bytes]:
        """``passerelle relay``, with ``extra`` options (e.g. ``--batch-size 5``)."""
        return self.start(name, "relay", "--poll", str(poll), *extra)

    def start_all(
        self,
        *,
        attester_poll: float = E2E_ATTESTER_POLL,
        relayer: bool = True,
        relayer_poll: float = E2E_RELAYER_POLL,
    ) -> None:
        """The committee's attesters and (unless ``relayer`` is False) one relayer."""
        for index in range(ATTESTERS):
            self.start_attester(index, poll=attester_poll)
        if relayer:
            self.start_relayer(poll=relayer_poll)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Signal ``name`` (nothing is sent if it has exited already) and return its exit code;
        SIGKILL if it has not exited within :data:`STOP_TIMEOUT`."""
        proc = self.running.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def exited(self) -> dict[str, int]:
        """The processes that should be running but are not, with their exit codes."""
        codes = {name: proc.poll() for name, proc in self.running.items()}
        return {name: code for name, code in codes.items() if code is not None}

    def check_running(self, *names: str) -> None:
        """:class:`HarnessError`, with the end of its log, if ``names`` (default: all) have
        not all kept running."""
        for name, code in self.exited().items():
            if not names or name in names:
                raise HarnessError(f"{name} exited with {code}:\n{self.tail(name)}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str, lines: int = 15) -> str:
        """The last ``lines`` lines of ``name``'s log."""
        return "\n".join(self.log(name).splitlines()[-lines:]) or "(empty log)"

    def logs_with(self, text: str) -> list[str]:
        """Names of the processes (running or not) whose log contains ``text``."""
        names = sorted(p.stem for p in self.logs.glob("*.log"))
        return [name for name in names if text in self.log(name)]

    def wait_relaying(
        self, name: str = "relayer", timeout: float = 30.0, *, starts: int = 0
    ) -> None:
        """Until relayer ``name`` has logged :data:`RELAYING` more than ``starts`` times (its
        log is appended to across restarts); :class:`HarnessError` if it exits first."""
        wait_for(
            lambda: self.log(name).count(RELAYING) > starts,
            f"{name} to start relaying",
            timeout,
            poll=0.1,
            alive=lambda: self.check_running(name),
        )


@contextmanager
def running(
    config: Path,
    logs: Path,
    *,
    attester_poll: float = E2E_ATTESTER_POLL,
    relayer: bool = True,
    relayer_poll: float = E2E_RELAYER_POLL,
) -> Iterator[Procs]:
    """The attesters and (unless ``relayer`` is False) a relayer on ``config``; every process
    started in the block, by the harness or by the caller, is stopped on exit."""
    procs = Procs(config, logs)
    try:
        procs.start_all(attester_poll=attester_poll, relayer=relayer, relayer_poll=relayer_poll)
        yield procs
    finally:
        procs.stop_all()


@contextmanager
def devnet(
    state: Path, *, assethub: bool = True, block_time: float = 1.0, echo: bool = False
) -> Iterator[Path]:
    """A fresh devnet in ``state`` (``devnet.manager.up``), its config path, ``down`` at the
    end whatever happened; ``echo`` prints what ``down`` stopped."""
    try:
        yield manager.up(state, assethub=assethub, block_time=block_time)
    finally:
        for line in manager.down(state):
            if echo:
                print(f"  {line}")


# --------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], object],
    what: str,
    timeout: float = 60,
    poll: float = 0.3,
    *,
    alive: Callable[[], object] | None = None,
) -> None:
    """Poll ``condition()`` until it is truthy. :class:`HarnessTimeout` naming ``what`` after
    ``timeout`` seconds; ``alive()``, called before each look, may raise to stop early (e.g.
    :meth:`Procs.check_running`)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if condition():
            return
        if time.monotonic() > deadline:
            raise HarnessTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# --------------------------------------------------------------------------- the chains


def rpc(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = 10.0) -> Any:
    """One JSON-RPC call (:func:`adapters.jsonrpc.call_sync`; it raises on an error object)."""
    return call_sync(url, method, params, timeout=timeout)


def block_number(url: str) -> int:
    return int(rpc(url, "eth_blockNumber"), 16)


_LOGS_RETRIES = 25


def logs(
    url: str,
    address: bytes,
    topic: bytes,
    since: int = 0,
    upto: int | None = None,
    *,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The logs with ``topic`` of the contract at ``address`` (20 bytes, or 32 left-padded), in
    blocks ``since`` to ``upto`` (default: the newest)."""
    query = {
        "address": to_hex(address[-20:]),
        "fromBlock": hex(since),
        "toBlock": "latest" if upto is None else hex(upto),
        "topics": [to_hex(topic)],
    }
    for attempt in range(_LOGS_RETRIES):
        try:
            found: list[dict[str, Any]] = rpc(url, "eth_getLogs", [query], timeout=timeout)
            return found
        except RpcCallError as exc:
            # The EthereumJS client (the PoS devnet) answers "latest" with a block whose number
            # it has not indexed yet for a moment after import: "Block number N not found".
            if "not found" not in exc.message or attempt == _LOGS_RETRIES - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def delivered_blocks(url: str, inbox: bytes, since: int = 0) -> dict[str, int]:
    """Message id (lower-case hex) → the block of its first ``Delivered`` event on the Inbox at
    ``inbox``, from block ``since``: what "delivered" means to the tests and the benchmark."""
    out: dict[str, int] = {}
    for entry in logs(url, inbox, DELIVERED, since, timeout=60.0):
        out.setdefault(entry["topics"][1].lower(), int(entry["blockNumber"], 16))
    return out
