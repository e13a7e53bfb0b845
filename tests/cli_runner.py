"""Run ``passerelle`` commands inside the test process, as the console script would.

A real ``passerelle`` process costs about a second of CPU to start (web3, eth-account,
SQLModel imports) and the CLI tests run hundreds of them: on CI's two cores that alone was over
a minute of the suite. :func:`run_cli` calls the very function the console script calls
(:func:`relayer.cli.main`: the same argument parsing, the same one-line error handling, the
same exit codes) with stdout and stderr captured, and returns what a subprocess would.

What it cannot show is the process boundary itself (the entry point's installation, import
errors at start-up, output flushing at exit); tests/test_installed_package.py and the
``python -m relayer.cli`` test in tests/test_cli_proof.py run real processes for that.

An exception that escapes :func:`relayer.cli.main` would be a traceback for a user: it is not
returned as an exit code but raised as a test failure with the exception chained.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from relayer.cli import main

__all__ = ["CommandTimeout", "EscapedException", "run_cli"]

# One module under both names it can be imported by (``cli_runner``: pytest puts tests/ on
# sys.path; ``tests.cli_runner``: the repo root makes tests/ a namespace package). Two copies
# would each keep their own stand-ins and count of users: one copy's last command out would put
# the real stream back under a command the other copy is running, and that output is lost.
# The test modules import it as ``cli_runner``; this keeps a stray spelling harmless.
sys.modules.setdefault("cli_runner", sys.modules[__name__])
sys.modules.setdefault("tests.cli_runner", sys.modules[__name__])


class EscapedException(AssertionError):
    """An exception left ``passerelle`` uncaught: a user would have seen a traceback."""


class CommandTimeout(AssertionError):
    """A command still running at its deadline (:func:`run_cli`'s ``timeout``)."""


_buffers = threading.local()
"""Each thread's capture buffers (``.out``, ``.err``) while it runs a command. One for the
module, not one per stand-in: pytest can throw the stand-ins away (below) and they are then
installed again, and a thread still inside a command must keep writing to its own buffers
through whichever generation of stand-in is installed."""


class _PerThread:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while commands run: a thread inside
    :func:`run_cli` writes to its own buffer, any other thread to the stream that was there.

    Why not ``contextlib.redirect_stdout``: it swaps the one process-wide ``sys.stdout``, so two
    threads running commands at once (tests/e2e_support.py ``Stream`` sends on several routes
    in threads while the test reads ``status``) would each capture the other's output."""

    def __init__(self, original: TextIO, which: str) -> None:
        self.original = original
        self.which = which  # "out" or "err": the attribute of _buffers this stream reads

    def target(self) -> TextIO:
        buffer: TextIO | None = getattr(_buffers, self.which, None)
        return self.original if buffer is None else buffer

    def write(self, text: str) -> int:
        return self.target().write(text)

    def flush(self) -> None:
        self.target().flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, … as the real target has them
        return getattr(self.target(), name)


_streams_lock = threading.Lock()
_users = 0  # threads inside _captured, a command left running by a timeout included


@contextlib.contextmanager
def _captured(out: io.StringIO, err: io.StringIO) -> Iterator[None]:
    """This thread's output into ``out`` and ``err`` for the block; other threads unaffected.

    The stand-ins are installed whenever ``sys.stdout``/``sys.stderr`` is not one, not only by
    the first thread in: pytest sets ``sys.stdout`` and ``sys.stderr`` itself around every
    setup, call and teardown (its capture's suspend and resume), which throws away stand-ins
    that a command left running by :func:`run_cli`'s timeout still counts on. Installing them
    only when no command was running meant that every later command of the worker captured
    nothing: ``send`` returned no messages, ``stderr == ""`` checks held vacuously. The last
    one out puts the stream back only if a stand-in is still there, and only the stream that
    stand-in wraps: a leaked command that ends during a later test must not write an earlier
    test's stream back over the one pytest (or ``capsys``) has installed since.

    Nested in one thread (a command run while another is running, e.g. from a callback), the
    inner block's end gives the outer command its buffers back, so its later output is still
    its own. Not captured: output of threads the command itself starts (trio's worker threads,
    a thread pool); they have no buffer of their own and write to the real stream, where
    ``redirect_stdout`` used to catch them. ``send`` and ``status`` print only from the thread
    that runs them."""
    global _users  # noqa: PLW0603 - one process-wide count, like sys.stdout itself
    with _streams_lock:
        if not isinstance(sys.stdout, _PerThread):
            sys.stdout = _PerThread(sys.stdout, "out")
        if not isinstance(sys.stderr, _PerThread):
            sys.stderr = _PerThread(sys.stderr, "err")
        _users += 1
    outer = getattr(_buffers, "out", None), getattr(_buffers, "err", None)
    _buffers.out, _buffers.err = out, err
    try:
        yield
    finally:
        _buffers.out, _buffers.err = outer
        with _streams_lock:
            _users -= 1
            if _users == 0:
                if isinstance(sys.stdout, _PerThread):
                    sys.stdout = sys.stdout.original
                if isinstance(sys.stderr, _PerThread):
                    sys.stderr = sys.stderr.original


def run_cli(*args: str | Path, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``passerelle *args`` in this process: the exit code and the captured output. Threads
    may run commands at the same time: each captures only its own output.

    With ``timeout`` the command runs in a thread of its own and :class:`CommandTimeout` fails
    the test once it has run that long. A subprocess had ``subprocess.run``'s timeout; in the
    process a hang (say, a regression in the very RPC deadlines the command relies on) would
    otherwise hold the CI run until its own limit. The command cannot be stopped from outside,
    so it is left behind in a daemon thread, its output still going to its own buffers, and
    later commands still capture theirs (:func:`_captured`)."""
    argv = [str(arg) for arg in args]
    if timeout is None:
        return _run(argv)
    outcome: list[subprocess.CompletedProcess[str] | BaseException] = []

    def command() -> None:
        try:
            outcome.append(_run(argv))
        except BaseException as exc:  # handed to the caller's thread below, re-raised there
            outcome.append(exc)

    worker = threading.Thread(target=command, name="run_cli", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise CommandTimeout(f"passerelle {' '.join(argv)} still running after {timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``main(argv)`` in this thread, its output captured: :func:`run_cli`'s work."""
    out, err = io.StringIO(), io.StringIO()
    code: int
    with _captured(out, err):
        try:
            main(argv)
        except SystemExit as exit_:
            code = _exit_code(exit_)
        except BaseException as exc:
            raise EscapedException(f"passerelle {' '.join(argv)} escaped: {exc!r}") from exc
        else:  # main() always exits; returning normally would be a bug of its own
            raise EscapedException(f"passerelle {' '.join(argv)} returned without exiting")
    return subprocess.CompletedProcess(
        ["passerelle", *argv], code, stdout=out.getvalue(), stderr=err.getvalue()
    )


def _exit_code(exit_: SystemExit) -> int:
    """The process exit status ``sys.exit(value)`` would give (None is 0; text prints, is 1)."""
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=sys.stderr)
    return 1
