"""tests/cli_runner.py's ``run_cli`` from several threads at once.

tests/e2e_support.py's ``Stream`` sends on several routes in threads while the test reads
``status`` in its own: every one of those calls is a ``run_cli`` in the test process. Before
session 8 ``run_cli`` captured with ``contextlib.redirect_stdout``, which swaps the one
process-wide ``sys.stdout``: two threads running commands at once each wrote into whichever
buffer was installed last, so a thread could read the other's output (or an empty one), and
the thread that left its block first restored the stream under the other. Here two threads
each run 40 commands side by side while the main thread prints, and every captured output must
be exactly that command's own help, nothing more and nothing less.

Also here: a command left running by ``run_cli``'s timeout must not leave later commands
capturing nothing (pytest swaps the streams between test phases), and e2e_support's ``send``
must refuse a successful answer without the messages it asked for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cli_runner
import e2e_support
import pytest
from cli_runner import CommandTimeout, run_cli

from relayer import cli

ROUNDS = 40
COMMANDS = ("send", "status")


def test_threads_each_capture_only_their_own_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Two threads × 40 ``run_cli(cmd, "--help")``: each result is its own command's help.

    The references are taken single-threaded first, so the comparison is exact (a mix of two
    helps, an empty capture or a stray line from another thread all differ)."""
    reference = {command: run_cli(command, "--help") for command in COMMANDS}
    for command, result in reference.items():
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: passerelle {command} ")
        assert result.stderr == ""
    # The two helps must differ, or swapped captures would go unnoticed.
    assert reference["send"].stdout != reference["status"].stdout
    capsys.readouterr()

    original = sys.stdout, sys.stderr
    start = threading.Barrier(len(COMMANDS) + 1)
    wrong: list[str] = []
    failures: list[BaseException] = []

    def commands(command: str) -> None:
        try:
            start.wait()
            for round_ in range(ROUNDS):
                result = run_cli(command, "--help")
                if (result.returncode, result.stdout, result.stderr) != (
                    0,
                    reference[command].stdout,
                    "",
                ):
                    wrong.append(f"{command} round {round_}: {result.stdout[:60]!r}")
        except BaseException as exc:  # a thread's failure must fail the test, not vanish
            failures.append(exc)

    threads = [threading.Thread(target=commands, args=(command,)) for command in COMMANDS]
    for thread in threads:
        thread.start()
    start.wait()
    # The main thread writes while commands run: its lines must reach the real stream (here
    # pytest's capture), never a command's buffer (the exact comparisons above catch that).
    for line in range(ROUNDS):
        print(f"main thread line {line}")
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a run_cli thread is stuck"

    assert failures == []
    assert wrong == [], f"{len(wrong)} of {ROUNDS * len(COMMANDS)} captures wrong: {wrong[:3]}"
    # The stand-ins are gone once the last command is done: the streams are the originals.
    assert (sys.stdout, sys.stderr) == original
    printed = capsys.readouterr().out
    assert printed.splitlines() == [f"main thread line {line}" for line in range(ROUNDS)]


def test_commands_still_capture_after_one_was_left_running_by_its_timeout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that outlives ``run_cli(timeout=)`` must not break capturing for the rest of
    the worker (session 8's integration review, M1).

    The left-behind thread keeps counting as a user of the stand-ins, and pytest then sets
    ``sys.stdout``/``sys.stderr`` itself (its capture's suspend and resume around every test
    phase; ``capsys.disabled()`` below does exactly that in the middle of the test). Before the
    fix the stand-ins were installed only by a first user, so every later ``run_cli`` returned
    ``stdout == stderr == ""``: a ``send`` then returned no messages and every check on them
    passed vacuously. When the left-behind command ends, the test's streams stay the test's."""
    release = threading.Event()
    left_behind: list[threading.Thread] = []
    real_main = cli.main  # what cli_runner calls; replaced there below for one argv

    def main(argv: list[str]) -> None:
        if argv != ["hang"]:
            real_main(argv)
            return
        left_behind.append(threading.current_thread())
        print("the hung command's first line")
        release.wait(60)
        print("the hung command's last line")
        print("and its error line", file=sys.stderr)
        raise SystemExit(0)

    monkeypatch.setattr(cli_runner, "main", main)
    try:
        with pytest.raises(CommandTimeout):
            run_cli("hang", timeout=0.2)
        assert isinstance(sys.stdout, cli_runner._PerThread)
        with capsys.disabled():  # pytest's own swap of the streams, as between test phases
            pass
        assert not isinstance(sys.stdout, cli_runner._PerThread), "pytest put its stream back"
        pytest_streams = sys.stdout, sys.stderr

        helped = run_cli("send", "--help")
        assert helped.returncode == 0
        assert helped.stdout.startswith("Usage: passerelle send "), repr(helped.stdout[:80])
        refused = run_cli("send", "--from")
        assert refused.returncode == 2
        assert "--from" in refused.stderr, repr(refused.stderr)
        print("the test's own line")
    finally:
        release.set()
        for thread in left_behind:
            thread.join(timeout=30)
    assert [thread.is_alive() for thread in left_behind] == [False]

    # The last one out put back the stream under the stand-in, pytest's, not an older one.
    assert cli_runner._users == 0
    assert (sys.stdout, sys.stderr) == pytest_streams
    # Neither the later commands' output nor the left-behind command's reached the test.
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("the test's own line\n", "")


@pytest.mark.parametrize(
    ("extra", "printed", "error"),
    [
        ((), 0, "expected at least one"),
        (("--count", "3"), 2, "expected 3"),
        (("--count=2",), 3, "expected 2"),
        (("--count", "2"), 2, None),
        (("--body", "x"), 1, None),
    ],
)
def test_send_wants_every_message_it_asked_for(
    monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], printed: int, error: str | None
) -> None:
    """e2e_support.send fails on an empty or short answer of a successful ``send``: an empty
    list made every later wait and check on its ids hold vacuously (review M1 (b))."""
    lines = "".join(
        json.dumps({"id": f"0x{n:064x}", "destination": 2}) + "\n" for n in range(printed)
    )

    def answer(*args: object, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(["passerelle"], 0, stdout=lines, stderr="")

    monkeypatch.setattr(e2e_support, "run_cli", answer)
    if error is None:
        assert len(e2e_support.send(Path("c.toml"), "alpha", "beta", *extra)) == printed
    else:
        with pytest.raises(AssertionError, match=error):
            e2e_support.send(Path("c.toml"), "alpha", "beta", *extra)
