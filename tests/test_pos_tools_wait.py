"""`make test` runs the PoS tools' build beside pytest (Makefile: pytest-beside-pos-tools), and
the PoS module waits for it (tests/e2e_support.py: :func:`wait_for_pos_tools`).

What could go wrong, and is tested here:

- the wait returns before the build is done (the PoS module would then find no Lodestar and,
  in CI, fail for the wrong reason, or a half-written tree);
- a failed build turns into a skip or a pass: a broken install must fail the run, naming the
  log and quoting its end;
- a status file that is not a number (a crashed writer, a planted file) is taken as success;
- a build that never ends holds the worker for ever;
- the Makefile: pytest does not start before the build ends (the point of the change), the
  build's failure or pytest's is lost in the target's exit status, or the build is left running
  after the target returns; the build compiles native addons it does not need, or fails to
  load one it does. These run the real Makefile in a scratch copy of the checkout's layout,
  with ``npm``, ``node``, ``ruff``, ``mypy`` and ``pytest`` replaced by scripts that record what
  they were given (no network, a few seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from e2e_support import POS_TOOLS_STATUS_VARIABLE, wait_for_pos_tools

ROOT = Path(__file__).resolve().parent.parent
FAILED = pytest.fail.Exception


def _status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    status = tmp_path / "pos-tools.status"
    monkeypatch.setenv(POS_TOOLS_STATUS_VARIABLE, str(status))
    return status


def test_without_the_variable_nothing_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POS_TOOLS_STATUS_VARIABLE, raising=False)
    started = time.monotonic()
    wait_for_pos_tools(timeout=30, poll=10)  # would sleep 10 s if it looked for a file
    assert time.monotonic() - started < 5


def test_the_wait_ends_only_when_the_build_has_written_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = _status(tmp_path, monkeypatch)
    written: list[float] = []

    def build() -> None:
        time.sleep(0.5)
        part = status.with_suffix(".part")
        part.write_text("0\n")
        written.append(time.monotonic())
        part.rename(status)

    writer = threading.Thread(target=build)
    writer.start()
    try:
        wait_for_pos_tools(timeout=30, poll=0.05)
        returned = time.monotonic()
    finally:
        writer.join()
    assert written and returned >= written[0]


def test_a_failed_build_fails_with_the_end_of_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = _status(tmp_path, monkeypatch)
    status.write_text("2\n")
    lines = [f"line {n}" for n in range(40)] + ["gyp ERR! build error"]
    (tmp_path / "pos-tools.log").write_text("\n".join(lines) + "\n")
    with pytest.raises(FAILED) as caught:
        wait_for_pos_tools(timeout=5, poll=0.05)
    message = str(caught.value)
    assert "`make pos-tools` failed (exit 2)" in message
    assert str(tmp_path / "pos-tools.log") in message
    assert message.endswith("gyp ERR! build error")
    assert "line 26" in message and "line 25\n" not in message  # the last 15 lines only


@pytest.mark.parametrize("planted", ["", "ok", "0; rm -rf /", "0\n1", "\x00\xff"])
def test_a_status_that_is_not_zero_is_a_failure_never_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    status = _status(tmp_path, monkeypatch)
    status.write_bytes(planted.encode("latin-1"))
    with pytest.raises(FAILED) as caught:  # no log at all: said so, not a traceback
        wait_for_pos_tools(timeout=5, poll=0.05)
    message = str(caught.value)
    assert "`make pos-tools` failed (an unreadable status" in message
    assert "cannot be read" in message


def test_a_build_that_never_ends_fails_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status(tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(FAILED, match=r"`make pos-tools` is still running after 1 s: see "):
        wait_for_pos_tools(timeout=0.6, poll=0.05)
    assert 0.6 <= time.monotonic() - started < 10


# --------------------------------------------------------------------------- the Makefile

# The fakes record the directory they ran in too: a recipe that lost its `cd devnet/npm-pos`
# would run `npm rebuild` in the root project (nothing to rebuild there) and the load check
# from the wrong place, and the call alone would still look right.
_FAKE_NPM = """#!/bin/sh
echo "npm $* [in $(basename "$PWD")]" >> "$FAKE_LOG"
if [ -n "$FAKE_NPM_FAIL" ]; then echo "gyp ERR! build error" >&2; exit 1; fi
# The PoS build ends only once pytest has started (or after 20 s): were pytest to wait for the
# build, as it did before, it would start after "npm done ci" and the test sees that.
if [ "$1" = ci ] && [ "$(basename "$PWD")" = npm-pos ]; then
  n=0; while ! grep -q "pytest start" "$FAKE_LOG" 2>/dev/null && [ $n -lt 400 ]; do
    sleep 0.05; n=$((n + 1)); done
fi
mkdir -p node_modules
echo "npm done $1" >> "$FAKE_LOG"
"""

# The build's load check (Makefile: POS_LOADS) run by `node -e`: what it was asked to load is
# recorded; told to, it fails as node does on a binding that is there but does not load (a
# prebuild for another Node ABI, a compile bigint-buffer's install script swallowed).
_FAKE_NODE = """#!/bin/sh
echo "node $* [in $(basename "$PWD")]" >> "$FAKE_LOG"
if [ -n "$FAKE_NODE_LOAD_FAIL" ]; then
  echo "Error: Cannot find module '.../prebuild/linux-x64-137-binding.node'" >&2; exit 1
fi
"""

_FAKE_PYTEST = """#!/bin/sh
# The Makefile's one collection (COLLECTED): recorded, with whether bytecode may be written,
# once it has taken a while, as a collection does: a PoS build started beside it would have
# logged first.
if [ "$1" = --collect-only ]; then
  sleep 0.5
  echo "pytest collect-only, PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE-unset}" \\
    >> "$FAKE_LOG"
  exit 0
fi
echo "pytest run, PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE-unset}" >> "$FAKE_LOG"
# pytest started: record whether the PoS build had finished then, then wait as the PoS module's
# fixture does, and exit as told.
if [ -z "$PASSERELLE_POS_TOOLS_STATUS" ]; then
  echo "pytest start: no status file" >> "$FAKE_LOG"; exit 9
fi
if [ -e "$PASSERELLE_POS_TOOLS_STATUS" ]; then echo "pytest start: built" >> "$FAKE_LOG";
else echo "pytest start: building" >> "$FAKE_LOG"; fi
while [ ! -e "$PASSERELLE_POS_TOOLS_STATUS" ]; do sleep 0.05; done
echo "pytest saw status $(cat "$PASSERELLE_POS_TOOLS_STATUS") args $*" >> "$FAKE_LOG"
exit "${FAKE_PYTEST_RC:-0}"
"""


def _scratch_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The Makefile in a folder laid out like the checkout, its tools replaced by scripts."""
    root = tmp_path / "checkout"
    (root / "devnet" / "npm-pos").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    for name in ("pyproject.toml", "package.json", "package-lock.json"):
        (root / name).write_text("")
    for name in ("package.json", "package-lock.json"):
        (root / "devnet" / "npm-pos" / name).write_text("")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (root / "node_modules").mkdir()
    # The virtualenv and the root npm project are there and newer than what they come from.
    past = time.time() - 60
    for made in ("pyproject.toml", "package.json", "package-lock.json"):
        os.utime(root / made, (past, past))
    (root / ".venv" / ".installed").write_text("")
    (root / "node_modules" / ".installed").write_text("")
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    scripts = {
        fake_bin / "npm": _FAKE_NPM,
        fake_bin / "node": _FAKE_NODE,
        bin_dir / "pytest": _FAKE_PYTEST,
        bin_dir / "ruff": "#!/bin/sh\nexit 0\n",
        bin_dir / "mypy": "#!/bin/sh\nexit 0\n",
    }
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        # As where CI runs: the test run must write bytecode all the same (Makefile).
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for variable in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", POS_TOOLS_STATUS_VARIABLE):
        env.pop(variable, None)
    return root, env


def _make(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_make_test_starts_pytest_beside_the_build_and_keeps_both_failures(
    tmp_path: Path,
) -> None:
    root, env = _scratch_checkout(tmp_path)
    calls = tmp_path / "calls.log"

    ok = _make(root, env, "test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    log = calls.read_text().splitlines()
    assert "pytest start: building" in log  # pytest did not wait for the PoS tools
    assert log.index("pytest start: building") < log.index("npm done ci")
    # A virtualenv that never collected (a fresh clone): one collection writes the rewritten
    # test modules, before the workers start and before the PoS build takes the CPU (its npm
    # ci comes after it); the run itself writes bytecode too, whatever the environment says.
    collect = "pytest collect-only, PYTHONDONTWRITEBYTECODE=unset"
    assert [line for line in log if line.startswith("pytest collect-only")] == [collect]
    pos_ci = "npm ci --ignore-scripts --no-audit --no-fund --loglevel=error [in npm-pos]"
    assert log.index(collect) < log.index(pos_ci)
    assert "pytest run, PYTHONDONTWRITEBYTECODE=unset" in log
    saw = next(line for line in log if line.startswith("pytest saw status"))
    assert saw.startswith("pytest saw status 0 args -q -n 3 --dist loadfile")
    assert "--cov=light_clients" in saw
    assert (root / "devnet" / "npm-pos" / "node_modules" / ".installed").exists()
    # No install script runs but those of the three native addons the devnet needs (Makefile:
    # pos-tools), even under a user's `ignore-scripts=true`, and then all three are LOADED.
    # All in devnet/npm-pos: the rebuild reaches its addons, the load check's relative path
    # its bigint-buffer.
    assert "npm ci --ignore-scripts --no-audit --no-fund --loglevel=error [in npm-pos]" in log
    rebuild = "npm rebuild @chainsafe/blst snappy bigint-buffer --ignore-scripts=false"
    assert f"{rebuild} --loglevel=error [in npm-pos]" in log
    loads = (
        'node -e require("@chainsafe/blst"); require("snappy"); '
        'require("./node_modules/bigint-buffer/build/Release/bigint_buffer.node") [in npm-pos]'
    )
    assert log.index(f"{rebuild} --loglevel=error [in npm-pos]") < log.index(loads)

    # A native piece that is there but does not load (blst's prebuild on a Node it was not
    # built for; a compile bigint-buffer's install script swallowed) fails the build, and the
    # log says how to see why: npm hides the install scripts' output.
    shutil.rmtree(root / "devnet" / "npm-pos" / "node_modules")
    unloaded = _make(root, {**env, "FAKE_NODE_LOAD_FAIL": "1"}, "test")
    assert unloaded.returncode != 0
    assert "make pos-tools failed (exit 2)" in unloaded.stdout
    assert "linux-x64-137-binding.node" in unloaded.stdout
    assert f"to see why: cd devnet/npm-pos && {rebuild} --foreground-scripts" in unloaded.stdout
    assert not (root / "devnet" / "npm-pos" / "node_modules" / ".installed").exists()

    # A failed build fails the target, even though pytest (here) passed, and says why.
    shutil.rmtree(root / "devnet" / "npm-pos" / "node_modules")
    calls.unlink()
    broken = _make(root, {**env, "FAKE_NPM_FAIL": "1"}, "test")
    assert broken.returncode != 0
    assert "make pos-tools failed (exit 2)" in broken.stdout
    assert "gyp ERR! build error" in broken.stdout
    assert any(line.startswith("pytest saw status 2") for line in calls.read_text().splitlines())
    assert not (root / "devnet" / "npm-pos" / "node_modules" / ".installed").exists()

    # A failing pytest fails the target with the build fine; the build was waited for (the
    # status is there when make returns: nothing is left running behind it).
    failed = _make(root, {**env, "FAKE_PYTEST_RC": "3"}, "test-fast")
    assert failed.returncode != 0
    assert "Error 3" in failed.stderr
    assert (root / "devnet" / "npm-pos" / "build" / "pos-tools.status").read_text() == "0\n"
    assert "-m not slow" in calls.read_text()

    # ruff and mypy run beside pytest (not before it), and a failure of theirs fails the target
    # although pytest passed, with their output printed. (The virtualenv collected once
    # already: no collection runs before the tests.)
    calls.unlink()
    (root / ".venv" / "bin" / "ruff").write_text("#!/bin/sh\necho 'E501 line too long'\nexit 1\n")
    linted = _make(root, env, "test")
    assert linted.returncode != 0
    assert "E501 line too long" in linted.stdout
    assert "ruff or mypy failed" in linted.stdout
    assert any(line.startswith("pytest saw status 0") for line in calls.read_text().splitlines())
    assert "collect-only" not in calls.read_text()

    # A set-up that failed (here the root npm project's install) fails the target and starts
    # no PoS build: nothing would run it, and its minutes would only delay the failure.
    calls.unlink()
    shutil.rmtree(root / "devnet" / "npm-pos" / "node_modules")
    os.utime(root / "package.json")  # newer than node_modules/.installed: installed again
    no_setup = _make(root, {**env, "FAKE_NPM_FAIL": "1"}, "test")
    assert no_setup.returncode != 0
    assert "not built: the set-up before it failed" in no_setup.stdout
    assert "[in checkout]" in calls.read_text()  # the root install ran, and failed
    assert "[in npm-pos]" not in calls.read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_make_installs_the_virtualenv_compiled_to_bytecode(tmp_path: Path) -> None:
    """uv, unlike pip, compiles nothing at install unless asked: without it, where
    PYTHONDONTWRITEBYTECODE is set, every process the tests start compiled its libraries from
    source (Makefile, session 12)."""
    root, env = _scratch_checkout(tmp_path)
    os.utime(root / "pyproject.toml")  # newer than .venv/.installed: installed again
    planned = _make(root, env, "-n", ".venv/.installed")
    assert planned.returncode == 0, planned.stderr
    install = next(line for line in planned.stdout.splitlines() if "uv pip install" in line)
    assert "--compile-bytecode" in install


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_make_lint_fails_on_a_file_only_the_formatter_would_change(tmp_path: Path) -> None:
    """`ruff check` passing is not enough: a file `ruff format` would rewrite fails the lint
    (and with it `make test`), with ruff's own line naming it."""
    root, env = _scratch_checkout(tmp_path)
    # This ruff passes every `check` and fails only the layout check, as on an unformatted file.
    (root / ".venv" / "bin" / "ruff").write_text(
        '#!/bin/sh\nif [ "$1 $2" = "format --check" ]; then\n'
        "  echo 'Would reformat: adapters/beacon.py'; exit 1\nfi\nexit 0\n"
    )
    linted = _make(root, env, "lint")
    assert linted.returncode != 0
    assert "Would reformat: adapters/beacon.py" in linted.stdout
