"""Passerelle installed from its wheel and run from another folder: nothing may come from the
checkout.

The wheel is built from a copy of what pyproject.toml packages (so the checkout gets no
``build/`` or ``*.egg-info``), offline, with .venv's setuptools (``--no-build-isolation``; the
``dev`` extra brings setuptools >= 70.1). It is installed with ``pip install --no-deps
--target`` into a temporary folder, and its ``passerelle`` entry point runs with that folder as
PYTHONPATH (.venv's interpreter supplies the dependencies) from another temporary folder.

The node tools come from the checkout's ``node_modules/.bin`` put on PATH — the way an installed
Passerelle finds a user's own anvil — with an empty tool cache and no ``npm`` on PATH, so nothing
can be downloaded: a lookup that fell through to the cache fails instead. The Asset Hub chain
spec is not in the wheel (its npm package is GPL-3.0-only): it is read from the
``@substrate/connect-known-chains`` beside the chopsticks on PATH, i.e. the checkout's.

What a user without a checkout or tools gets, the per-user cache, runs here with a stand-in
``npm`` that lays out the checkout's ``node_modules`` (nothing is downloaded either): the lock it
is handed is the wheel's ``devnet/npm/package-lock.json``.

A file missing from the package data fails here: the contract artifacts (the devnet deploys
them), the cache's npm manifest and lock, a module that reads any of them through the checkout.
Costs ~5 s: the wheel ~1 s, the anvil-only devnet (``--no-assethub``; the chain spec and
chopsticks' lookup are checked without starting chopsticks) ~3 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import missing_chain_tool
from fakes import FAKE_NPM

from adapters.evm.contracts import EVM_VERSIONS

pytestmark = [pytest.mark.slow, pytest.mark.chain]

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
CACHE_MANIFEST = [REPO_ROOT / "devnet/npm/package.json", REPO_ROOT / "devnet/npm/package-lock.json"]
SPEC_SHA256 = "75380d2835f80582d634390eb052fe9df4a84bc3754feadbd9baee9783d7f77c"
TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    """An installed copy of Passerelle and a folder outside the checkout to run it from."""

    target: Path  # what `pip install --target` filled: PYTHONPATH
    wheel: Path
    cwd: Path
    env: dict[str, str]

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``passerelle ARGS`` from the installed copy's entry point."""
        return subprocess.run(
            [str(self.target / "bin" / "passerelle"), *args],
            cwd=self.cwd,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def python(self, code: str, env: dict[str, str] | None = None) -> str:
        """Run ``code`` with the installed copy first on sys.path; its stdout."""
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.cwd,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _packaged_sources(destination: Path) -> Path:
    """Copy exactly what pyproject.toml builds from: itself, its readme, its packages."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    destination.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", destination)
    shutil.copy2(REPO_ROOT / project["project"]["readme"], destination)
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pattern.rstrip("*")
        shutil.copytree(
            REPO_ROOT / top,
            destination / top,
            # node_modules: devnet/npm-pos/ (the PoS tools, ~450 MB) is not packaged.
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"),
        )
    return destination


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if not (NODE_BIN / "anvil").exists() or not (NODE_BIN / "chopsticks").exists():
        missing_chain_tool("the checkout's node_modules are not installed: run `make`")
    node = shutil.which("node")
    if node is None:
        missing_chain_tool("node is not on PATH")
    root = tmp_path_factory.mktemp("installed")
    wheels = root / "wheels"
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--quiet",
        "-w",
        str(wheels),
        str(_packaged_sources(root / "src")),
    )
    [wheel] = wheels.glob("passerelle-*.whl")
    target = root / "site"
    _pip("install", "--no-deps", "--no-index", "--quiet", "--target", str(target), str(wheel))

    # PATH: the checkout's npm .bin folder and a folder holding only `node`: no npm, so an
    # attempt to install a tool fails rather than downloads.
    node_only = root / "node-only"
    node_only.mkdir()
    (node_only / "node").symlink_to(node)
    home = root / "home"
    home.mkdir()
    env = {
        "PATH": f"{NODE_BIN}:{node_only}",
        "PYTHONPATH": str(target),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(root / "empty-cache"),
        "LANG": "C.UTF-8",
    }
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(target=target, wheel=wheel, cwd=cwd, env=env)


def test_the_wheel_carries_the_package_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    # One folder per EVM version (adapters/evm/artifacts/<version>/), each must be shipped.
    artifacts = sorted((REPO_ROOT / "adapters/evm/artifacts").glob("*/*.json"))
    assert {path.parent.name for path in artifacts} == set(EVM_VERSIONS)
    for path in [*artifacts, *CACHE_MANIFEST]:
        assert path.relative_to(REPO_ROOT).as_posix() in names, path
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    # Nothing of an npm package is redistributed, the (GPL-3.0-only) chain spec least of all.
    assert not any("rococo" in name or "node_modules" in name for name in names)
    devnet_json = sorted(name for name in names if name.startswith("devnet/") and ".json" in name)
    assert devnet_json == sorted(path.relative_to(REPO_ROOT).as_posix() for path in CACHE_MANIFEST)
    # ... and the installed copy reads each version's set from inside itself.
    loaded = installed.python(
        "from adapters.evm.contracts import EVM_VERSIONS, artifact_names, load_artifact\n"
        "for v in EVM_VERSIONS:\n"
        "    print(v, len([load_artifact(n, v).bytecode for n in artifact_names(v)]))"
    )
    per_version = str(len(artifacts) // len(EVM_VERSIONS))
    assert loaded.split() == [word for v in EVM_VERSIONS for word in (v, per_version)]


def test_the_installed_copy_is_what_runs(installed: Installed) -> None:
    shown = json.loads(
        installed.python(
            "import json, adapters, devnet, devnet.tools, light_clients, relayer\n"
            "print(json.dumps({'files': [m.__file__ for m in "
            "(adapters, devnet, light_clients, relayer)],\n"
            "  'checkout': str(devnet.tools.CHECKOUT_NODE_MODULES)}))"
        )
    )
    for file in shown["files"]:
        assert Path(file).is_relative_to(installed.target), file
    assert shown["checkout"] == "None"  # no checkout around: tools come from PATH or the cache


def test_proof_verify_from_another_folder(installed: Installed) -> None:
    proofs = installed.cwd / "proofs"
    shutil.copytree(REPO_ROOT / "docs" / "examples", proofs)
    files = sorted(p.name for p in proofs.glob("*.json"))
    done = installed.run("proof", "verify", *(f"proofs/{name}" for name in files))
    assert done.returncode == 0, done.stdout + done.stderr

    # The control above passes; the same proof against another root must be refused.
    merkle = json.loads((proofs / "merkle.json").read_text())
    merkle["root"] = "0x" + "11" * 32
    (proofs / "forged.json").write_text(json.dumps(merkle))
    done = installed.run("proof", "verify", "proofs/forged.json")
    assert done.returncode == 1
    said = (done.stdout + done.stderr).strip().splitlines()
    assert len(said) == 1 and "invalid" in said[0], said


def test_devnet_up_and_down_from_another_folder(installed: Installed) -> None:
    state = installed.cwd / ".devnet"  # the default --dir, relative to where it runs
    try:
        done = installed.run("devnet", "up", "--no-assethub")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(state / "passerelle.toml")
        record = json.loads((state / "devnet.json").read_text())
        assert [p["chain"] for p in record["processes"]] == ["alpha", "beta"]
        for process in record["processes"]:  # anvil came through PATH, not a checkout lookup
            assert Path(process["binary"]).is_relative_to(REPO_ROOT / "node_modules")

        shown = json.loads(installed.run("devnet", "status", "--json").stdout)
        assert shown["running"] is True
        assert all(isinstance(chain["block"], int) for chain in shown["chains"])
    finally:
        down = installed.run("devnet", "down")
    assert down.returncode == 0, down.stderr
    assert [line.split(" pid ")[0] for line in down.stdout.splitlines()] == [
        "alpha: stopped anvil",
        "beta: stopped anvil",
    ]
    assert not (installed.cwd / "empty-cache").exists()  # nothing was installed


def test_chopsticks_and_its_chain_spec_come_from_the_installed_copy(installed: Installed) -> None:
    """What a full `devnet up` adds for Asset Hub, without paying chopsticks' start-up: the
    chain spec comes from the npm package beside the chopsticks on PATH, checked by digest."""
    shown = json.loads(installed.python(_SHOW_TOOLS))
    assert Path(shown.pop("anvil")).is_relative_to(REPO_ROOT / "node_modules")
    assert shown == {
        "entry": str(REPO_ROOT / "node_modules/@acala-network/chopsticks/chopsticks.cjs"),
        "spec_package": str(REPO_ROOT / "node_modules/@substrate/connect-known-chains"),
        "spec_sha256": SPEC_SHA256,
        "id": "asset-hub-rococo",
    }
    assert not (installed.cwd / "empty-cache").exists()  # nothing was installed


# Where the installed copy finds each node tool, and the spec it writes (run from the cwd).
_SHOW_TOOLS = (
    "import hashlib, json, pathlib\n"
    "from devnet.anvil import anvil_binary\n"
    "from devnet.chopsticks import chain_spec_source, chopsticks_entry, write_chain_spec\n"
    "spec = write_chain_spec(pathlib.Path('spec.json')).read_bytes()\n"
    "print(json.dumps({'anvil': str(anvil_binary()), 'entry': str(chopsticks_entry()),"
    " 'spec_package': str(chain_spec_source()),"
    " 'spec_sha256': hashlib.sha256(spec).hexdigest(), 'id': json.loads(spec)['id']}))"
)


def test_without_a_checkout_or_tools_the_cache_is_installed_from_the_wheel_s_lock(
    installed: Installed, tmp_path: Path
) -> None:
    """What a user without a checkout gets: the first lookup runs `npm ci` once with the lock
    the wheel carries, in the per-user cache, and everything comes from there afterwards."""
    fake_bin = tmp_path / "npm-bin"
    fake_bin.mkdir()
    npm = fake_bin / "npm"
    npm.write_text(f"#!{sys.executable}\n{FAKE_NPM}", encoding="utf-8")
    npm.chmod(0o755)
    cache = tmp_path / "cache"
    calls = tmp_path / "npm-calls"
    node_only = installed.env["PATH"].split(":")[1]
    env = {
        **installed.env,
        "PATH": f"{fake_bin}:{node_only}",
        "XDG_CACHE_HOME": str(cache),
        "FAKE_NPM_LOG": str(calls),
        "FAKE_NPM_SOURCE": str(REPO_ROOT / "node_modules"),
    }
    first = json.loads(installed.python(_SHOW_TOOLS, env=env))
    again = json.loads(installed.python(_SHOW_TOOLS, env=env))
    assert first == again
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]  # npm ran once
    assert call["args"][0] == "ci" and "--ignore-scripts" in call["args"]
    shipped = (installed.target / "devnet/npm/package-lock.json").read_bytes()
    assert bytes.fromhex(call["lock"]) == shipped == CACHE_MANIFEST[1].read_bytes()
    [install] = [p for p in (cache / "passerelle/node").iterdir() if p.is_dir()]
    for key in ("anvil", "entry", "spec_package"):
        assert Path(first[key]).is_relative_to(install / "node_modules"), key
    assert first["spec_sha256"] == SPEC_SHA256


def test_path_only_tools_without_npm_or_chain_spec_is_one_line(
    installed: Installed, tmp_path: Path
) -> None:
    """anvil and chopsticks on PATH (foundryup's anvil, a global chopsticks without the chain
    spec's package beside it) and no npm: `devnet up` says so in one line and starts nothing."""
    native = (NODE_BIN / "anvil").resolve().parent.parent / "anvil-linux-amd64" / "bin" / "anvil"
    if not native.is_file():
        pytest.skip("the test lays out a Linux amd64 anvil")
    global_modules = tmp_path / "global"
    script = global_modules / "@acala-network" / "chopsticks" / "chopsticks.cjs"
    script.parent.mkdir(parents=True)
    script.write_text("// a stand-in: never run, the chain spec is missing first\n")
    script.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "anvil").symlink_to(native)
    (tools / "chopsticks").symlink_to(script)
    node_only = installed.env["PATH"].split(":")[1]
    env = {**installed.env, "PATH": f"{tools}:{node_only}"}
    done = installed.run("devnet", "up", "--dir", "nospec", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the Asset Hub chain spec (@substrate/connect-known-chains@1.10.3)" in lines[0]
    assert "npm is not on PATH" in lines[0]
    assert not (installed.cwd / "nospec" / "devnet.json").exists()
    assert not list((installed.cwd / "nospec").glob("*.log"))  # no anvil was started


def test_without_node_tools_or_npm_devnet_up_is_one_line(installed: Installed) -> None:
    env = {**installed.env, "PATH": str(Path(installed.env["PATH"].split(":")[1]))}  # node only
    done = installed.run("devnet", "up", "--dir", "bare", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "anvil is not installed" in lines[0] and "npm is not on PATH" in lines[0]
    assert not (installed.cwd / "bare" / "devnet.json").exists()


@pytest.fixture(autouse=True)
def _no_leftover_chains(installed: Installed) -> Iterator[None]:
    """Whatever a test did, its devnet is down afterwards (``down`` is idempotent)."""
    yield
    for state in (installed.cwd / ".devnet", installed.cwd / "bare", installed.cwd / "nospec"):
        if (state / "devnet.json").exists():
            installed.run("devnet", "down", "--dir", str(state))
