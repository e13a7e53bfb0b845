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
from pathlib import Path

from relayer.cli import main

__all__ = ["run_cli"]


class EscapedException(AssertionError):
    """An exception left ``passerelle`` uncaught: a user would have seen a traceback."""


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``passerelle *args`` in this process: the exit code and the captured output."""
    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    code: int
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
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
