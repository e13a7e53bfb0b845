"""Compile the Solidity contracts into committed, deterministic artifacts.

``python -m adapters.evm.compile`` builds, for each EVM version of
:data:`~adapters.evm.contracts.EVM_VERSIONS`, one fixed standard-JSON input from
``adapters/evm/contracts/*.sol``, runs solcjs (npm ``solc``, pinned by package-lock.json) through
node, and writes ``adapters/evm/artifacts/<evm version>/<Contract>.json``. ``--check`` compiles
afresh and exits 1 if the committed artifacts differ (tests/test_contract_artifacts.py runs it),
so the relayer never needs a compiler and the bytecode it deploys is provably built from the
sources.

The sources are the same for every version; only solc's ``evmVersion`` differs, which decides
the opcodes the compiler may emit (cancun: MCOPY for memory copies; shanghai: none of EIP-1153
and EIP-5656). So the sources must not use what the oldest version lacks (``transient``
variables, inline ``tstore``/``mcopy``): solc refuses them for shanghai, and the compile fails.

Determinism: sources are read in sorted order, the JSON is written with sorted keys and no
timestamps or absolute paths, and the compiler version is checked against :data:`SOLC_VERSION`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapters.evm.contracts import (
    ARTIFACTS_DIR,
    DEFAULT_EVM_VERSION,
    EVM_VERSIONS,
    ArtifactError,
    check_evm_version,
)

__all__ = [
    "ARTIFACTS_DIR",
    "CONTRACTS_DIR",
    "SOLC_VERSION",
    "CompileError",
    "build_all",
    "build_artifacts",
    "check",
    "compile_sources",
    "input_sha256",
    "main",
    "settings",
    "standard_input",
    "write",
]

# Compiling is a development step: solcjs comes from the checkout's node_modules (package.json
# pins it), never from PATH or the devnet's tool cache, so the artifacts are always built by
# exactly SOLC_VERSION. Nothing at run time compiles.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
SOLC_MODULE = REPO_ROOT / "node_modules" / "solc"

SOLC_VERSION = "0.8.30+commit.73712a01"
"""The compiler the artifacts are built with (package.json pins npm ``solc`` 0.8.30)."""

# Everything but `evmVersion`, which `settings` adds per EVM version: one source, one optimizer
# configuration, so the versions differ only in the opcodes the compiler may use.
_SETTINGS: dict[str, Any] = {
    # runs=10000 favours cheap calls over small deployments: delivery is the hot path.
    "optimizer": {"enabled": True, "runs": 10000},
    "viaIR": True,
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.methodIdentifiers",
                "storageLayout",
            ]
        }
    },
}


def settings(evm_version: str = DEFAULT_EVM_VERSION) -> dict[str, Any]:
    """Compiler settings for ``evm_version`` (part of the input hash, so changing them
    invalidates the artifacts). Raises :class:`CompileError` for an unknown version."""
    try:
        check_evm_version(evm_version)
    except ArtifactError as error:
        raise CompileError(str(error)) from None
    return {"evmVersion": evm_version, **_SETTINGS}


# Runs solcjs on the standard-JSON input read from stdin; prints `{"version", "output"}`.
_NODE_SCRIPT = """
const solc = require(process.argv[1]);
const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const output = JSON.parse(solc.compile(Buffer.concat(chunks).toString('utf8')));
  process.stdout.write(JSON.stringify({version: solc.version(), output: output}));
});
"""


class CompileError(RuntimeError):
    """The compiler is missing, failed, or reported errors."""


def standard_input(
    contracts_dir: Path = CONTRACTS_DIR, evm_version: str = DEFAULT_EVM_VERSION
) -> dict[str, Any]:
    """The standard-JSON input: every ``*.sol`` under ``contracts_dir`` keyed by file name,
    compiled for ``evm_version``."""
    sources = {
        path.name: {"content": path.read_text(encoding="utf-8")}
        for path in sorted(contracts_dir.glob("*.sol"))
    }
    if not sources:
        raise CompileError(f"no Solidity sources in {contracts_dir}")
    return {"language": "Solidity", "sources": sources, "settings": settings(evm_version)}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_sha256(compiler_input: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the whole input (sources and settings)."""
    return hashlib.sha256(_canonical(compiler_input).encode("utf-8")).hexdigest()


def compile_sources(compiler_input: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Run solcjs on ``compiler_input``; return (compiler version, standard-JSON output).

    Raises :class:`CompileError` if node or the solc package is missing, the version is not
    :data:`SOLC_VERSION`, or the compiler reports an error.
    """
    node = shutil.which("node")
    if node is None:
        raise CompileError("node is not installed (needed to run solcjs)")
    if not (SOLC_MODULE / "package.json").is_file():
        raise CompileError(
            f"{SOLC_MODULE} is missing: compiling is a step of a Passerelle checkout, after "
            "`make` (npm ci); an installed package ships the compiled artifacts"
        )
    completed = subprocess.run(
        [node, "-e", _NODE_SCRIPT, str(SOLC_MODULE)],
        input=_canonical(compiler_input).encode("utf-8"),
        capture_output=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if completed.returncode != 0:
        raise CompileError(f"solcjs failed: {completed.stderr.decode(errors='replace').strip()}")
    result = json.loads(completed.stdout)
    version = str(result["version"])
    if not version.startswith(SOLC_VERSION):
        raise CompileError(f"solc {version} found, artifacts are built with {SOLC_VERSION}")
    output: dict[str, Any] = result["output"]
    diagnostics = output.get("errors", [])
    errors = [d for d in diagnostics if d.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(d.get("formattedMessage", d["message"]) for d in errors))
    for warning in diagnostics:
        print(warning.get("formattedMessage", warning["message"]), file=sys.stderr)
    return version, output


def _storage_layout(layout: dict[str, Any] | None) -> list[dict[str, Any]]:
    # Keep what identifies a variable's slot; drop compiler-internal ids (astId, type ids).
    if not layout:
        return []
    types = layout.get("types") or {}
    return [
        {
            "label": entry["label"],
            "slot": int(entry["slot"]),
            "offset": entry["offset"],
            "type": types.get(entry["type"], {}).get("label", entry["type"]),
        }
        for entry in layout.get("storage", [])
    ]


def build_artifacts(compiler_input: dict[str, Any]) -> dict[str, str]:
    """Compile and return ``{file name: JSON text}`` for every contract with an ABI."""
    version, output = compile_sources(compiler_input)
    digest = input_sha256(compiler_input)
    recorded = {
        key: value for key, value in compiler_input["settings"].items() if key != "outputSelection"
    }
    artifacts: dict[str, str] = {}
    for source_name, contracts in sorted(output.get("contracts", {}).items()):
        for name, contract in sorted(contracts.items()):
            if not contract.get("abi"):
                continue  # internal libraries: nothing to deploy or call
            if f"{name}.json" in artifacts:
                raise CompileError(f"two contracts named {name}")
            evm = contract["evm"]
            bytecode = evm["bytecode"]["object"]
            deployed = evm["deployedBytecode"]["object"]
            artifact = {
                "contractName": name,
                "sourceName": source_name,
                "abi": contract["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + deployed,
                "methodIdentifiers": evm.get("methodIdentifiers", {}),
                "storageLayout": _storage_layout(contract.get("storageLayout")),
                "compiler": {"version": version, "settings": recorded},
                "inputSha256": digest,
            }
            artifacts[f"{name}.json"] = json.dumps(artifact, indent=2, sort_keys=True) + "\n"
    return artifacts


def build_all(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, str]:
    """Compile the sources for every EVM version; return ``{"<version>/<Contract>.json": text}``.

    The versions compile concurrently (one node process each, ~10 s apiece).
    """
    inputs = [standard_input(contracts_dir, version) for version in EVM_VERSIONS]
    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        built = list(pool.map(build_artifacts, inputs))
    return {
        f"{version}/{name}": text
        for version, artifacts in zip(EVM_VERSIONS, built, strict=True)
        for name, text in artifacts.items()
    }


def _present(directory: Path) -> set[str]:
    # Every artifact file below `directory`, as a relative posix path: files of an older layout
    # (directly in `directory`) or of a dropped EVM version count, so they are reported as stale.
    if not directory.is_dir():
        return set()
    return {path.relative_to(directory).as_posix() for path in directory.rglob("*.json")}


def write(artifacts: dict[str, str], directory: Path = ARTIFACTS_DIR) -> list[str]:
    """Write ``{relative path: text}`` under ``directory``, remove stale ``*.json`` files (and
    folders they leave empty); return the relative paths that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for stale in sorted(_present(directory) - artifacts.keys()):
        (directory / stale).unlink()
        changed.append(stale)
    for folder in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    for name, text in sorted(artifacts.items()):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    return changed


def check(artifacts: dict[str, str], directory: Path = ARTIFACTS_DIR) -> list[str]:
    """Return one line per committed artifact that differs from ``artifacts`` (empty: all good)."""
    problems: list[str] = []
    present = _present(directory)
    for name in sorted(present - artifacts.keys()):
        problems.append(f"{name}: stale (no such contract or EVM version in the sources)")
    for name, text in sorted(artifacts.items()):
        path = directory / name
        if name not in present:
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from a fresh compile")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m adapters.evm.compile", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed artifacts differ from a fresh compile",
    )
    arguments = parser.parse_args(argv)
    try:
        artifacts = build_all()
    except CompileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if arguments.check:
        problems = check(artifacts)
        for problem in problems:
            print(f"{ARTIFACTS_DIR.relative_to(REPO_ROOT)}/{problem}", file=sys.stderr)
        if problems:
            print("run `python -m adapters.evm.compile` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(artifacts)} artifacts match the sources")
        return 0
    changed = write(artifacts)
    where = ARTIFACTS_DIR.relative_to(REPO_ROOT)
    print(f"{len(artifacts)} artifacts ({', '.join(EVM_VERSIONS)}) in {where}", end="")
    print(f", updated: {', '.join(changed)}" if changed else ", unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
