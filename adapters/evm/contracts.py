"""Load the committed contract artifacts (``adapters/evm/artifacts/<evm version>/<Contract>.json``).

Usage::

    outbox = load_artifact("Outbox")                          # built for cancun
    outbox = load_artifact("Outbox", evm_version="shanghai")  # for a chain without EIP-1153
    factory = w3.eth.contract(abi=outbox.abi, bytecode=outbox.bytecode)

Every contract is compiled once per EVM version in :data:`EVM_VERSIONS`, from the same sources:
a chain whose execution layer stops at an older fork (the proof-of-stake devnet's Shanghai has
no TLOAD/TSTORE/MCOPY) must be given bytecode built for it, or its first transaction that
reaches such an opcode reverts. The ABIs are identical across versions (a test checks it), so
only deployment cares which set a chain uses; reading a deployed contract may use any.

The artifacts are written by ``python -m adapters.evm.compile`` and checked against the sources
by the test suite; this module only reads them (no compiler, no web3 import). They are package
data (pyproject.toml, ``[tool.setuptools.package-data]``) read through ``importlib.resources``,
so an installed Passerelle finds them inside itself, wherever it was installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_EVM_VERSION",
    "EVM_VERSIONS",
    "Artifact",
    "ArtifactError",
    "artifact_names",
    "check_evm_version",
    "load_artifact",
]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
"""Where the artifacts are on disk when the package is plain files (a checkout, a wheel
install); the compiler writes one subfolder per EVM version here. Readers below go through
:func:`_artifacts`."""

EVM_VERSIONS = ("cancun", "shanghai")
"""The EVM versions (solc ``evmVersion`` names) every contract is compiled for, newest first.
Adding one here and running ``python -m adapters.evm.compile`` adds its artifact folder."""

DEFAULT_EVM_VERSION = "cancun"
"""The set used unless a caller names one: anvil's default fork (newer than cancun) and the public
testnets run every cancun opcode, and callers written before the shanghai set name no version."""


class ArtifactError(RuntimeError):
    """No artifact of that name or EVM version, or an unreadable one."""


def check_evm_version(evm_version: object) -> str:
    """Return ``evm_version`` if it is one of :data:`EVM_VERSIONS`; else :class:`ArtifactError`.

    The name becomes a folder name, so only the known ones pass (never ``..`` or a path).
    """
    if not isinstance(evm_version, str) or evm_version not in EVM_VERSIONS:
        raise ArtifactError(
            f"unknown EVM version {evm_version!r} (known: {', '.join(EVM_VERSIONS)})"
        )
    return evm_version


def _artifacts(evm_version: str) -> Traversable:
    return (
        resources.files(__package__ or "adapters.evm")
        .joinpath("artifacts")
        .joinpath(check_evm_version(evm_version))
    )


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI and creation / runtime bytecode.

    ``bytecode`` is what a deployment sends (constructor arguments are appended ABI-encoded);
    ``deployed_bytecode`` is the runtime code with zeroed placeholders for immutables, so it
    differs from ``eth_getCode`` wherever an immutable is stored. Both are empty for interfaces
    and abstract contracts. ``storage_layout`` lists ``{label, slot, offset, type}``.
    """

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    storage_layout: list[dict[str, Any]] = field(default_factory=list)
    method_identifiers: dict[str, str] = field(default_factory=dict)
    compiler_version: str = ""
    evm_version: str = DEFAULT_EVM_VERSION


def _hex_bytes(value: object, what: str) -> bytes:
    try:
        return parse_data(value, what)
    except DecodeError as error:
        raise ArtifactError(str(error)) from None


def artifact_names(evm_version: str = DEFAULT_EVM_VERSION) -> list[str]:
    """Names of every committed artifact built for ``evm_version``, sorted.

    Raises :class:`ArtifactError` for a version not in :data:`EVM_VERSIONS`.
    """
    folder = _artifacts(evm_version)
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    )


def load_artifact(name: str, evm_version: str = DEFAULT_EVM_VERSION) -> Artifact:
    """Return the artifact of contract ``name`` (e.g. ``"Inbox"``) built for ``evm_version``
    (one of :data:`EVM_VERSIONS`, the version the target chain executes); cached.

    Raises :class:`ArtifactError` if the version is unknown, there is no such artifact, or it
    is malformed or was built for another EVM version than its folder says.
    """
    # One cache entry per (name, version) however the caller spelt it (positional, keyword,
    # default), so a contract is parsed once and every caller shares the same Artifact.
    return _load_artifact(name, evm_version)


@cache
def _load_artifact(name: str, evm_version: str) -> Artifact:
    folder = _artifacts(evm_version)
    path = folder.joinpath(f"{name}.json")
    if not isinstance(name, str) or not name.isidentifier() or not path.is_file():
        known = ", ".join(artifact_names(evm_version)) or "none"
        raise ArtifactError(f"no {evm_version} contract artifact {name!r} (known: {known})")
    where = f"{evm_version}/{path.name}"
    try:
        data = json.loads(path.read_bytes())
        abi = data["abi"]
        if not isinstance(abi, list):
            raise ArtifactError(f"{where}: abi is not a list")
        # A file copied into the wrong folder would deploy opcodes the chain cannot run.
        built_for = data["compiler"]["settings"]["evmVersion"]
        if built_for != evm_version:
            raise ArtifactError(f"{where}: built for EVM version {built_for!r}, not {evm_version}")
        return Artifact(
            name=name,
            abi=abi,
            bytecode=_hex_bytes(data["bytecode"], f"{where} bytecode"),
            deployed_bytecode=_hex_bytes(data["deployedBytecode"], f"{where} deployedBytecode"),
            storage_layout=list(data.get("storageLayout", [])),
            method_identifiers=dict(data.get("methodIdentifiers", {})),
            compiler_version=str(data["compiler"].get("version", "")),
            evm_version=evm_version,
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{where}: unreadable artifact ({error})") from error
