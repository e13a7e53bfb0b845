"""What an attester or a relayer process imports: only what its configuration needs.

Starting ``passerelle attest`` or ``passerelle relay`` is mostly imports (~1.1 CPU s before
session 8), and the suite starts dozens of them on two cores. Each library is now imported by
the code that uses it (docs/decisions.md, "Process starts import what the configuration
needs"): an attester of EVM chains with a directory checkpoint store signs with coincurve and
writes files, so it loads neither SQLAlchemy/SQLModel (the ledger, a PostgreSQL store) nor
eth-account (EVM transactions) nor substrate-interface; a relayer of EVM chains loads no
substrate-interface. These tests start the real CLI in a fresh interpreter and read its
``sys.modules`` once each of its loops has run a round, so a module-level import added back
anywhere on the path (a family's module, the signer, the checkpoint store) fails them.

The chains are closed ports: every round fails at once with a warning, which is the signal
that the loops (and every module they use) are running; nothing waits for a fixed time.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_cli

from light_clients.committee import address_of
from light_clients.hashing import keccak256
from relayer import cli
from relayer.checkpoints import is_database_url
from relayer.config import load_config

ROOT = Path(__file__).resolve().parents[1]
KEYS = [keccak256(f"import cost test key {i}".encode()) for i in range(3)]

# Run in a fresh interpreter: the CLI as the console script runs it, plus a logging handler
# that, once each named loop has logged its first failed round, prints the loaded modules and
# ends the process (os._exit: the loops never end by themselves).
PROBE = r"""
import logging, os, sys

from relayer.cli import main

command, config, *loops = sys.argv[1:]
seen = set()


class FirstRounds(logging.Handler):
    def emit(self, record):
        seen.update(loop for loop in loops if record.getMessage().startswith(loop + ": "))
        if seen == set(loops):
            sys.stdout.write("\n".join(sorted(sys.modules)) + "\n")
            sys.stdout.flush()
            os._exit(0)


logging.getLogger("passerelle").addHandler(FirstRounds(logging.WARNING))
index = ["--index", "0"] if command == "attest" else []
main([command, "--config", config, *index, "--poll", "0.05"])
"""

# An attester of EVM chains with a directory store: none of these, nor anything inside them.
ATTESTER_NEVER = (
    "alembic",
    "eth_account",
    "eth_utils",
    "relayer.families.substrate",
    "relayer.ledger",
    "requests",
    "scalecodec",
    "sqlalchemy",
    "sqlmodel",
    "substrateinterface",
)
# A relayer of EVM chains keeps its ledger (SQLAlchemy) and signs transactions (eth-account),
# but has no Substrate chain.
RELAYER_NEVER = ("relayer.families.substrate", "requests", "scalecodec", "substrateinterface")


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A local port bound (so nothing else takes it) but not listening: connections to it are
    refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def evm_config(folder: Path, port: int) -> Path:
    """Two EVM chains whose node is ``port``, a directory checkpoint store, an SQLite ledger,
    one attester key and a relayer key: what a plain EVM deployment configures."""
    validators = ", ".join(f'"0x{address_of(key).hex()}"' for key in KEYS)
    chains = "".join(
        f"""
[[chains]]
name = "{name}"
domain = {domain}
kind = "evm"
rpc = ["http://127.0.0.1:{port}"]
chain_id = {domain}
finality = "confirmations:3"
outbox = "0x{str(domain) * 40}"
inbox = "0x{str(domain + 2) * 40}"
"""
        for name, domain in (("alpha", 1), ("beta", 2))
    )
    path = folder / "passerelle.toml"
    path.write_text(
        f"""devnet = true

[ledger]
location = "ledger.db"

[committee]
validators = [{validators}]
threshold = 2
checkpoint_store = "checkpoints"
{chains}
[relayer]
key = "0x{KEYS[2].hex()}"

[[attesters]]
key = "0x{KEYS[0].hex()}"
"""
    )
    config = load_config(path)  # the test's own premise: a valid EVM-only config
    assert {chain.kind for chain in config.chains} == {"evm"}
    assert not is_database_url(config.checkpoint_location)
    return path


def started_modules(config: Path, command: str, loops: list[str]) -> set[str]:
    """The modules a ``passerelle command`` process holds once each of ``loops`` has run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROBE, command, str(config), *loops],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"passerelle {command}: {loops} never all ran a round: {exc.stderr!r}")
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The members of ``modules`` that are one of ``packages`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_an_evm_attester_with_a_directory_store_loads_no_database_or_substrate_code(
    tmp_path: Path, closed_port: int
) -> None:
    modules = started_modules(
        evm_config(tmp_path, closed_port), "attest", ["origin alpha", "origin beta"]
    )
    # The loops ran through the EVM family's origin code: the probe looked at a real start.
    assert {"relayer.attester", "relayer.families.evm.origin", "coincurve"} <= modules
    assert loaded(modules, ATTESTER_NEVER) == []


def test_an_evm_relayer_loads_no_substrate_code_and_its_signing_library_up_front(
    tmp_path: Path, closed_port: int
) -> None:
    config = evm_config(tmp_path, closed_port)
    migrated = run_cli("ledger", "migrate", "--config", config)
    assert migrated.returncode == 0, migrated.stderr
    loops = ["scan alpha", "scan beta", "deliver to alpha", "deliver to beta"]
    modules = started_modules(config, "relay", loops)
    assert {"relayer.relay", "relayer.families.evm.delivery", "sqlalchemy"} <= modules
    # Loaded at start-up, before the event loop, not at the first delivery (there was none).
    assert "eth_account" in modules
    assert loaded(modules, RELAYER_NEVER) == []


def test_a_missing_package_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library imported on first use can be missing at that moment: the CLI says which one in
    one line, not "internal error" and no traceback (None in sys.modules makes its import fail
    as an absent package's does)."""
    monkeypatch.setitem(sys.modules, "eth_account", None)
    result = run_cli("relay", "--config", tmp_path / "absent.toml")
    # 69 (EX_UNAVAILABLE), not 70: an installation fault, not a bug in Passerelle.
    assert result.returncode == 69, result.stderr
    assert result.stderr.splitlines() == [
        "passerelle: a package it needs is not installed: import of eth_account halted; "
        "None in sys.modules"
    ]


def test_a_missing_module_of_an_installed_package_is_an_internal_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Says "not installed" only when the top-level package is really absent: a missing module of
    an installed one (a typo in a lazy ``from eth_utils.adress import …``, or a library that
    moved a module) is a bug to report, not a package to reinstall (review L1)."""
    ours = ModuleNotFoundError("No module named 'eth_utils.adress'", name="eth_utils.adress")
    assert cli._exit_code_for(ours, verbose=False) == 70
    assert capsys.readouterr().err.splitlines() == [
        "passerelle: internal error: ModuleNotFoundError: No module named 'eth_utils.adress'"
    ]
    # A package no one installed, found through trio's exception groups as the CLI meets it.
    absent = ModuleNotFoundError("No module named 'passerelle_absent'", name="passerelle_absent")
    assert cli._exit_code_for(ExceptionGroup("nursery", [absent]), verbose=False) == 69
    assert capsys.readouterr().err.splitlines() == [
        "passerelle: a package it needs is not installed: No module named 'passerelle_absent'"
    ]
    # An error with no module name says nothing about what is installed.
    unnamed = ModuleNotFoundError("no name")
    assert cli._exit_code_for(unnamed, verbose=False) == 70


# An attester's ordinary error (a config it cannot read) in a process where SQLAlchemy cannot
# be imported: a fresh interpreter, as no module of the ledger may be loaded yet.
BROKEN_LEDGER_LIBRARY = r"""
import sys

sys.modules["sqlalchemy"] = None  # an import of it fails, as a broken installation's would
from relayer.cli import main

try:
    main(["attest", "--config", sys.argv[1], "--index", "0"])
finally:
    # Classifying the error imported nothing: neither the ledger nor the relay module.
    print(sorted(m for m in ("relayer.ledger", "relayer.relay") if sys.modules.get(m)))
"""


def test_an_attesters_error_stays_one_line_when_the_ledger_library_is_broken(
    tmp_path: Path,
) -> None:
    """An EVM attester never loads the ledger (SQLAlchemy, SQLModel). The CLI's error handler
    used to import it to list the user errors, so a broken SQLAlchemy turned the attester's
    one-line error into a traceback about SQLAlchemy, hiding the real report (review M2)."""
    absent = tmp_path / "absent.toml"
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_LEDGER_LIBRARY, str(absent)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"passerelle: cannot read config {absent}: No such file or directory"
    ]
    assert result.stdout.splitlines() == ["[]"]


# ------------------------------------------------- session 8, FINTA2: the review RFINA


_EXIT_CODES = {
    ("adapters.errors", "AdapterError"): 1,
    ("relayer.checkpoints", "CheckpointStoreError"): 1,
    ("relayer.config", "ConfigError"): cli.EXIT_USAGE,
    ("relayer.jsonfields", "FieldError"): 1,
    ("relayer.keys", "KeyFileError"): cli.EXIT_USAGE,
    ("relayer.ledger", "LedgerError"): 1,
    ("relayer.relay", "RouteHalted"): cli.EXIT_HALTED,
    ("devnet.errors", "DevnetError"): 1,
}


def test_every_user_error_has_its_exit_code_here() -> None:
    """The table below covers exactly relayer/cli.py's ``_USER_ERRORS``: a class added there
    without a line here (or removed) fails, so the next test checks each one."""
    assert set(cli._USER_ERRORS) == set(_EXIT_CODES)


@pytest.mark.parametrize(("module", "name"), sorted(_EXIT_CODES))
def test_each_user_error_is_named_by_the_module_that_defines_it(
    module: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review RFINA L4. ``_USER_ERRORS`` names each class by its module, looked up in
    ``sys.modules`` without importing. Named by a module that only re-exports it (the class
    moved), or misspelt, the look-up misses whenever the listed module is not loaded, and the
    error prints "internal error" with exit 70: nothing else fails. Here each entry is the
    class's own ``__module__``, and an instance gives one line and its own exit code."""
    error = getattr(importlib.import_module(module), name)
    assert isinstance(error, type) and issubclass(error, Exception)
    assert error.__module__ == module  # defined there, not re-exported
    assert cli._exit_code_for(error("the reason"), verbose=False) == _EXIT_CODES[(module, name)]
    assert capsys.readouterr().err == "passerelle: the reason\n"
