"""Recorded pids: is a process still the chain ``up`` started, and stopping it only if it is.

A pid is only a number the kernel recycles. Before ``down`` signals one, or ``status`` calls
it alive, :func:`is_ours` checks the process behind it against its ``devnet.json`` entry: its
command line (read through psutil) names the recorded binary and its port argument (``--port``,
or the entry's ``port_flag``: the proof-of-stake chain's EthereumJS client is recognised by
``--rpcPort``, Lodestar by ``--rest.port``; and chopsticks' ``--config``), and its start time
matches the recorded one. A recycled pid fails that, and
nothing is signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from typing import Any

import psutil

from devnet.process import HOST, NodeProcess

__all__ = ["CHILDREN", "adopt", "inspect", "is_ours", "start_time", "stop"]

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

_GONE_STATES = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


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
    return seen is None or seen[0] in _GONE_STATES


def is_ours(entry: dict[str, Any]) -> bool:
    """True if the recorded process is alive and is still the anvil or chopsticks `up` started.

    The command line must name the recorded binary (argv[0], or argv[1] when node runs it: the
    npm anvil wrapper, chopsticks.cjs, Lodestar, the EthereumJS client) and the recorded port
    argument (``port_flag``, default ``--port``, followed by ``port_arg``, else ``port``:
    chopsticks is started with port 0 and told its port afterwards), the recorded
    ``--config`` when there is one, and the start time must match the recorded one within
    :data:`START_TOLERANCE`. A zombie (exited, not yet reaped) is not alive.
    """
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    child = CHILDREN.get(pid)
    if child is not None and not child.running:  # also reaps our own exited child
        return False
    seen = inspect(pid)
    if seen is None or seen[0] in _GONE_STATES:
        return False
    _, started, argv = seen
    if str(entry.get("binary", "")) not in argv[:2]:
        return False
    port = str(entry.get("port_arg", entry.get("port", "")))
    flag = str(entry.get("port_flag", "--port"))
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


def _signal(pid: int, signum: signal.Signals) -> None:
    """Signal the chain's whole process group when it leads one (it does: start_new_session),
    so a node wrapper's child goes too; otherwise just the pid."""
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
    _signal(pid, signal.SIGTERM)
    how = "stopped"
    if not _wait_gone(pid, _grace(entry)):
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, STOP_TIMEOUT)
        how = "killed (SIGKILL after SIGTERM timed out)"
    CHILDREN.pop(pid, None)
    return f"{name}: {how} {entry.get('program', 'anvil')} pid {pid} on {HOST}:{port}"
