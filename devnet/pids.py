"""Recorded pids: is a process still the chain ``up`` started, and stopping it only if it is.

A pid is only a number the kernel recycles, and ``devnet.json`` is a file anyone who can write
the state folder can edit. Before ``down`` signals a pid, or ``status`` calls it alive,
:func:`is_ours` checks the process behind it: its command line (read through psutil) must run
the tool devnet itself resolves for the entry's kind (:data:`KIND_TOOLS`: anvil, chopsticks,
the EthereumJS client, Lodestar; never the record's ``binary``) with that kind's own port flag
(``--port``; EthereumJS ``--rpcPort``, Lodestar ``--rest.port``; chopsticks ``--port 0`` and
its ``--config``) followed by the recorded port number, and its start time must match the
recorded one. A recycled pid fails that, and so does a record edited to name ``/bin/sleep`` or
any other program: nothing is signalled. (Such a record can still name another devnet's chain
of the same tool and port, run by the same user: the tool, flag and port pin that far.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import psutil

from devnet.process import HOST, NodeProcess
from devnet.tools import (
    ToolError,
    anvil_path,
    chopsticks_script,
    ethereumjs_script,
    lodestar_script,
)

__all__ = [
    "CHILDREN",
    "GONE_STATES",
    "KIND_TOOLS",
    "adopt",
    "inspect",
    "is_ours",
    "signal_group",
    "start_time",
    "stop",
]

STOP_TIMEOUT = 5.0

CHILDREN: dict[int, NodeProcess] = {}
"""Chains started by this Python process, by pid. Keeping the Popen objects lets ``down`` in the
same process (tests) reap its own children instead of leaving zombies, and stops Python from
warning that a still-running subprocess was garbage-collected: outliving us is the point."""

# The start time recorded by `up` and the one `down` or `status` reads later are both the
# kernel's (boot-relative, exact) start time plus the boot time, which the kernel reports in
# whole seconds from the current wall clock: the two readings can differ by a second, or more
# if the clock is stepped in between. Such a step makes the check refuse (nothing signalled);
# a recycled pid would also need the recorded binary and port to get within this window.
START_TOLERANCE = 2.0

GONE_STATES = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
"""psutil states of a process that has exited (a zombie awaits its reaping): not alive."""


KIND_TOOLS: Final[dict[str, tuple[Callable[[], Path], str]]] = {
    "evm": (anvil_path, "--port"),
    "substrate": (chopsticks_script, "--port"),  # always --port 0: it announces the real one
    "pos": (ethereumjs_script, "--rpcPort"),
    "beacon": (lodestar_script, "--rest.port"),
}
"""Per kind of chain entry (an entry without one is anvil's, as in :mod:`devnet.kinds`): how
devnet finds the program it runs (:mod:`devnet.tools`) and the flag its port follows. This,
not the record, says what an entry's process must be."""


def _expected(entry: dict[str, Any]) -> tuple[str, str, str] | None:
    """(program path, port flag, port argument) the entry's process must show, or None when the
    entry's kind or port is not one devnet writes or its tool cannot be found."""
    tool = KIND_TOOLS.get(str(entry.get("kind", "evm")))
    port = entry.get("port")
    if tool is None or isinstance(port, bool) or not isinstance(port, int):
        return None
    if not 0 < port < 65536:
        return None
    find, flag = tool
    try:
        program = find()
    except ToolError:  # not installed here: nothing devnet started runs it
        return None
    return str(program), flag, "0" if entry.get("kind") == "substrate" else str(port)


def inspect(pid: int) -> tuple[str, float, list[str]] | None:
    """(psutil status, start time in seconds since the epoch, argv) of ``pid``, or None.

    None when there is no such process, when it is a zombie psutil cannot read, or when we may
    not read it (another user's process is not one `up` started). psutil reads the same kernel
    fields on Linux and macOS, so there is one code path and a start time on both.
    """
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.status(), process.create_time(), process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def adopt(chain: NodeProcess) -> float | None:
    """Remember a chain this process just started; return its start time for the record."""
    CHILDREN[chain.pid] = chain
    return start_time(chain.pid)


def start_time(pid: int) -> float | None:
    """The kernel's start time of ``pid`` (seconds since the epoch), None if unreadable."""
    seen = inspect(pid)
    return None if seen is None else seen[1]


def _gone(pid: int) -> bool:
    """No such process any more, or only a zombie waiting to be reaped."""
    seen = inspect(pid)
    return seen is None or seen[0] in GONE_STATES


def is_ours(entry: dict[str, Any]) -> bool:
    """True if the recorded process is alive and is still the chain process `up` started.

    The command line must name the program devnet resolves for the entry's kind
    (:data:`KIND_TOOLS`; argv[0], or argv[1] when node runs it: the npm anvil wrapper,
    chopsticks' script, Lodestar, the EthereumJS client; argv[3] after node's ``--require
    <preload>``, as chopsticks runs in the devnet's Collator block mode) and that kind's port
    flag followed by the recorded port (chopsticks: ``--port 0``, it is told its port
    afterwards), the recorded ``--config`` when there is one, and the start time must match
    the recorded one within :data:`START_TOLERANCE`. The record's ``binary``, ``port_flag``
    and ``port_arg`` are not read: every one of them can be copied from ``/proc`` for any
    process. A zombie (exited, not yet reaped) is not alive.
    """
    pid = entry.get("pid")
    expected = _expected(entry)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or expected is None:
        return False
    child = CHILDREN.get(pid)
    if child is not None and not child.running:  # also reaps our own exited child
        return False
    seen = inspect(pid)
    if seen is None or seen[0] in GONE_STATES:
        return False
    _, started, argv = seen
    program, flag, port = expected
    runs = argv[:2] if argv[1:2] != ["--require"] else [argv[0], *argv[3:4]]
    if program not in runs:
        return False
    if not any(a == flag and b == port for a, b in itertools.pairwise(argv)):
        return False
    config = entry.get("config_arg")
    if config is not None and not any(
        a == "--config" and b == str(config) for a, b in itertools.pairwise(argv)
    ):
        return False
    # A record without a start time (written before psutil was used: "start_ticks") is judged
    # on its command line alone, as such records always were when no start time was readable.
    recorded = entry.get("start_time")
    if recorded is None:
        return True
    return isinstance(recorded, int | float) and abs(recorded - started) <= START_TOLERANCE


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        child = CHILDREN.get(pid)
        if child is not None:
            if not child.running:
                return True
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
            if _gone(pid):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def signal_group(pid: int, signum: signal.Signals) -> None:
    """Signal the process group of a chain (or of the devnet's PostgreSQL) when ``pid`` leads
    one (ours do: start_new_session), so a node wrapper's child or a server's backends go too;
    otherwise just the pid (``killpg`` of a non-leader would fail and leave it running)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _grace(entry: dict[str, Any]) -> float:
    """Seconds between SIGTERM and SIGKILL: the entry's ``stop_grace`` (Lodestar, which ignores
    SIGTERM, records a short one) when it is a sane number, else :data:`STOP_TIMEOUT`."""
    grace = entry.get("stop_grace")
    if isinstance(grace, int | float) and not isinstance(grace, bool) and 0 < grace <= 60:
        return float(grace)
    return STOP_TIMEOUT


def stop(entry: dict[str, Any]) -> str:
    """Stop one recorded process if it is still ours (:func:`is_ours`): SIGTERM to its group,
    SIGKILL if it is still there after its grace (:func:`_grace`). One line saying what
    happened."""
    name, pid, port = entry.get("chain", "?"), entry.get("pid"), entry.get("port")
    if not isinstance(pid, int) or not is_ours(entry):
        if isinstance(pid, int):
            CHILDREN.pop(pid, None)
        return f"{name}: pid {pid} was not running (nothing signalled)"
    signal_group(pid, signal.SIGTERM)
    how = "stopped"
    if not _wait_gone(pid, _grace(entry)):
        signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, STOP_TIMEOUT)
        how = "killed (SIGKILL after SIGTERM timed out)"
    CHILDREN.pop(pid, None)
    return f"{name}: {how} {entry.get('program', 'anvil')} pid {pid} on {HOST}:{port}"
