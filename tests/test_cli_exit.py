"""The ``passerelle`` process ends without the interpreter's teardown, and loses nothing by it.

:func:`relayer.cli.main`, as a process's entry point, ends the process with ``os._exit`` once
the command is done (``_end_process``: freeing every object one by one cost up to a second of
CPU per command). What a normal exit does that a user or an operator can see must still
happen: every line the command wrote arrives, through a pipe too; its exit status is kept;
threads that are not daemons finish; ``atexit`` handlers run, after them and before the end.
Called with arguments (tests run commands inside their own process), ``main`` raises
:class:`SystemExit` instead, or it would end the test run: tests/cli_runner.py relies on it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

from relayer import cli

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.json"))

# The process: `passerelle` with a non-daemon thread and an atexit handler of its own. The
# thread writes its line only once the command is done and the process is ending (its main
# thread is in _end_process), so the line arrives only if the end waits for the thread.
PROCESS = """
import atexit, sys, threading, time
from relayer.cli import main

def ending() -> bool:
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None and frame.f_code.co_name != "_end_process":
        frame = frame.f_back
    return frame is not None

def late() -> None:
    deadline = time.monotonic() + 20
    while not ending() and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.stdout.write("thread finished\\n" if ending() else "the process never ended\\n")

threading.Thread(target=late).start()
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
main()
sys.stdout.write("main returned\\n")
"""


def test_the_process_ends_as_a_normal_exit_would(tmp_path: Path) -> None:
    """The same command in this process and as a process: the same status (2: one file is
    missing), the same output, then the thread's line and the atexit handler's last; ``main``
    never returns."""
    args = ["proof", "verify", "--json", *map(str, EXAMPLES), str(tmp_path / "missing.json")]
    inside = run_cli(*args)
    assert inside.returncode == 2, inside.stderr
    assert len(inside.stdout.splitlines()) == len(EXAMPLES) + 1
    process = subprocess.run(
        [sys.executable, "-c", PROCESS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == inside.returncode, process.stderr
    assert process.stderr == inside.stderr
    assert process.stdout == inside.stdout + "thread finished\natexit ran\n"


def test_main_with_arguments_raises_system_exit() -> None:
    """In-process callers get :class:`SystemExit` with the status, never the process's end."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["proof", "verify", str(EXAMPLES[0])])
    assert exited.value.code == 0
