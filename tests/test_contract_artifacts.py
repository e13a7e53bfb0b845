"""The committed contract artifacts are exactly what the sources compile to.

The relayer and devnet deploy ``adapters/evm/artifacts/*.json`` without a compiler, so these
must never drift from ``adapters/evm/contracts/*.sol``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import missing_chain_tool

from adapters.evm.compile import (
    ARTIFACTS_DIR,
    SOLC_VERSION,
    input_sha256,
    standard_input,
)
from adapters.evm.contracts import ArtifactError, artifact_names, load_artifact

REPO_ROOT = Path(__file__).resolve().parents[1]

DEPLOYABLE = {
    "Inbox",
    "Outbox",
    "Ping",
    "TestRecipient",
    "TestToken",
    "TokenBridge",
    "WrappedToken",
}

# The surface other components call; changing one of these is an interface change.
EXPECTED_SIGNATURES = {
    "Outbox": {
        "dispatch(uint32,bytes32,bytes)",
        "root()",
        "count()",
        "branch()",
        "latestCheckpoint()",
        "localDomain()",
    },
    "Inbox": {
        "process((uint32,bytes32,bytes32,uint32),bytes,bytes[],bytes32[32][])",
        "retry(bytes)",
        "delivered(bytes32)",
        "failedMessage(bytes32)",
        "setCommittee(address[],uint8)",
        "setOrigin(uint32,bytes32)",
        "setProtected(address,bool)",
        "validators()",
        "threshold()",
        "epoch()",
        "outboxOf(uint32)",
        "checkpointDigest((uint32,bytes32,bytes32,uint32))",
        "localDomain()",
    },
    "TokenBridge": {
        "transferRemote(address,uint256,uint32,bytes32)",
        "handle(uint32,bytes32,bytes)",
        "setRemote(uint32,bytes32)",
        "registerHomeToken(address,uint32)",
        "registerWrappedToken(uint32,bytes32,address)",
    },
    "Ping": {"handle(uint32,bytes32,bytes)", "count()", "inbox()"},
    "IMessageRecipient": {"handle(uint32,bytes32,bytes)"},
}


def test_artifacts_are_built_from_the_current_sources() -> None:
    """Cheap, compiler-free drift check: the recorded input hash matches the sources."""
    digest = input_sha256(standard_input())
    for name in artifact_names():
        data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert data["inputSha256"] == digest, (
            f"{name}.json was built from other sources: run `python -m adapters.evm.compile`"
        )
        assert data["compiler"]["version"].startswith(SOLC_VERSION)


def test_artifacts_match_a_fresh_compile() -> None:
    if shutil.which("node") is None:
        missing_chain_tool("node is not installed (runs solcjs)")
    completed = subprocess.run(
        [sys.executable, "-m", "adapters.evm.compile", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_contract_has_an_artifact() -> None:
    names = set(artifact_names())
    assert names >= DEPLOYABLE | {"IMessageRecipient"}
    for name in names:
        artifact = load_artifact(name)
        assert artifact.abi
        if name in DEPLOYABLE:
            assert artifact.bytecode and artifact.deployed_bytecode
            # EIP-170 limit, so it deploys on any chain.
            assert len(artifact.deployed_bytecode) <= 24_576


def test_interfaces_are_stable() -> None:
    for name, signatures in EXPECTED_SIGNATURES.items():
        assert signatures <= set(load_artifact(name).method_identifiers), name


def test_unknown_artifact_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="no contract artifact 'Nope'"):
        load_artifact("Nope")
    with pytest.raises(ArtifactError):
        load_artifact("../compile")
