"""Load the committed contract artifacts (``adapters/evm/artifacts/<Contract>.json``).

Usage::

    outbox = load_artifact("Outbox")
    factory = w3.eth.contract(abi=outbox.abi, bytecode=outbox.bytecode)

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

__all__ = ["ARTIFACTS_DIR", "Artifact", "ArtifactError", "artifact_names", "load_artifact"]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
"""Where the artifacts are on disk when the package is plain files (a checkout, a wheel
install); the compiler writes here. Readers below go through :func:`_artifacts`."""


def _artifacts() -> Traversable:
    return resources.files(__package__ or "adapters.evm").joinpath("artifacts")


class ArtifactError(RuntimeError):
    """No artifact of that name, or an unreadable one."""


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


def _hex_bytes(value: object, what: str) -> bytes:
    try:
        return parse_data(value, what)
    except DecodeError as error:
        raise ArtifactError(str(error)) from None


def artifact_names() -> list[str]:
    """Names of every committed artifact, sorted."""
    folder = _artifacts()
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    )


@cache
def load_artifact(name: str) -> Artifact:
    """Return the artifact of contract ``name`` (e.g. ``"Inbox"``); cached.

    Raises :class:`ArtifactError` if there is no such artifact or it is malformed.
    """
    path = _artifacts().joinpath(f"{name}.json")
    if not name.isidentifier() or not path.is_file():
        known = ", ".join(artifact_names()) or "none"
        raise ArtifactError(f"no contract artifact {name!r} (known: {known})")
    try:
        data = json.loads(path.read_bytes())
        abi = data["abi"]
        if not isinstance(abi, list):
            raise ArtifactError(f"{path.name}: abi is not a list")
        return Artifact(
            name=name,
            abi=abi,
            bytecode=_hex_bytes(data["bytecode"], f"{path.name} bytecode"),
            deployed_bytecode=_hex_bytes(data["deployedBytecode"], f"{path.name} deployedBytecode"),
            storage_layout=list(data.get("storageLayout", [])),
            method_identifiers=dict(data.get("methodIdentifiers", {})),
            compiler_version=str(data.get("compiler", {}).get("version", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{path.name}: unreadable artifact ({error})") from error
