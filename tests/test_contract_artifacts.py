"""The committed contract artifacts are exactly what the sources compile to, for every EVM version.

The relayer and devnet deploy ``adapters/evm/artifacts/<evm version>/*.json`` without a
compiler, so these must never drift from ``adapters/evm/contracts/*.sol``. A chain executes one
EVM version: the shanghai set must hold no opcode shanghai lacks (TLOAD, TSTORE, MCOPY), or the
first call reaching one reverts on that chain — checked both on the bytes and on a real anvil
running the shanghai fork, where the TokenBridge (whose reentrancy guard used transient storage
until the shanghai set existed) must transfer and refuse reentry.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from e2e_support import missing_chain_tool
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3RPCError

from adapters.evm import contracts
from adapters.evm.compile import (
    ARTIFACTS_DIR,
    SOLC_VERSION,
    compile_sources,
    input_sha256,
    standard_input,
)
from adapters.evm.contracts import (
    EVM_VERSIONS,
    ArtifactError,
    artifact_names,
    load_artifact,
)
from devnet.anvil import DEV_ADDRESSES, AnvilError, AnvilProcess, anvil_binary, start_anvil
from light_clients.hashing import keccak256

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
        "process((uint32,bytes32,bytes32,uint32),bytes,bytes,bytes32[])",
        "processOrCut((uint32,bytes32,bytes32,uint32),bytes,bytes,bytes32[])",
        "retry(bytes)",
        "delivered(uint32,bytes32,uint256)",
        "isDelivered(uint32,uint32)",
        "failedMessage(bytes32)",
        "announceCommittee(address[],uint8)",
        "setCommittee(address[],uint8)",
        "announceOrigin(uint32,bytes32)",
        "setOrigin(uint32,bytes32)",
        "transferOwnership(address)",
        "acceptOwnership()",
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

# Opcodes a pre-cancun EVM does not have: TLOAD and TSTORE (EIP-1153), MCOPY (EIP-5656).
CANCUN_ONLY = {0x5C: "TLOAD", 0x5D: "TSTORE", 0x5E: "MCOPY"}
# solc's CBOR metadata trailer (ipfs hash, compiler version, its own length): data, not code.
METADATA = re.compile(rb"\xa2\x64ipfs\x58\x22.{34}\x64solc\x43.{3}\x00\x33", re.DOTALL)


def opcodes(code: bytes) -> Iterator[tuple[int, int]]:
    """Yield (offset, opcode) of each instruction of ``code``, skipping PUSH1..PUSH32 immediates
    and solc metadata trailers, so a 0x5e inside a constant or a hash is not an MCOPY."""
    offset = 0
    while offset < len(code):
        trailer = METADATA.match(code, offset)
        if trailer is not None:
            offset = trailer.end()
            continue
        opcode = code[offset]
        yield offset, opcode
        offset += 1 + (opcode - 0x5F if 0x60 <= opcode <= 0x7F else 0)


def cancun_only_opcodes(code: bytes) -> list[str]:
    return [f"{CANCUN_ONLY[op]}@{at}" for at, op in opcodes(code) if op in CANCUN_ONLY]


# --------------------------------------------------------------------------- the files


def test_artifact_folders_are_the_evm_versions() -> None:
    entries = {entry.name: entry for entry in ARTIFACTS_DIR.iterdir()}
    assert set(entries) == set(EVM_VERSIONS)
    assert all(entry.is_dir() for entry in entries.values())


@pytest.mark.parametrize("evm_version", EVM_VERSIONS)
def test_artifacts_are_built_from_the_current_sources(evm_version: str) -> None:
    """Cheap, compiler-free drift check: the recorded input hash matches the sources, and each
    artifact says it was built for the version its folder is named after."""
    digest = input_sha256(standard_input(evm_version=evm_version))
    names = artifact_names(evm_version)
    assert names
    for name in names:
        path = ARTIFACTS_DIR / evm_version / f"{name}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["inputSha256"] == digest, (
            f"{path} was built from other sources: run `python -m adapters.evm.compile`"
        )
        assert data["compiler"]["version"].startswith(SOLC_VERSION)
        assert data["compiler"]["settings"]["evmVersion"] == evm_version, path
        assert load_artifact(name, evm_version=evm_version).evm_version == evm_version


# Two solcjs runs (one per EVM version, in parallel): ~20 s, more on a busy machine; the
# input-hash test above is the fast suite's drift check.
@pytest.mark.slow
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


@pytest.mark.parametrize("evm_version", EVM_VERSIONS)
def test_every_contract_has_an_artifact(evm_version: str) -> None:
    names = set(artifact_names(evm_version))
    assert names >= DEPLOYABLE | {"IMessageRecipient"}
    for name in names:
        artifact = load_artifact(name, evm_version=evm_version)
        assert artifact.abi
        if name in DEPLOYABLE:
            assert artifact.bytecode and artifact.deployed_bytecode
            # EIP-170 limit, so it deploys on any chain.
            assert len(artifact.deployed_bytecode) <= 24_576


def test_the_default_is_cancun() -> None:
    # Every caller written before the shanghai set keeps deploying what it deployed.
    assert load_artifact("Inbox") is load_artifact("Inbox", evm_version="cancun")
    assert artifact_names() == artifact_names("cancun")


def test_abis_are_identical_across_versions() -> None:
    """Only deployment picks a version: the interface, selectors and storage are the same."""
    first, *others = EVM_VERSIONS
    for other in others:
        assert artifact_names(other) == artifact_names(first)
        for name in artifact_names(first):
            a, b = load_artifact(name, first), load_artifact(name, other)
            assert a.abi == b.abi, name
            assert a.method_identifiers == b.method_identifiers, name
            assert a.storage_layout == b.storage_layout, name


def test_interfaces_are_stable() -> None:
    for name, signatures in EXPECTED_SIGNATURES.items():
        assert signatures <= set(load_artifact(name).method_identifiers), name


def test_unknown_artifact_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="no cancun contract artifact 'Nope'"):
        load_artifact("Nope")
    with pytest.raises(ArtifactError):
        load_artifact("../compile")


@pytest.mark.parametrize("version", ["london", "prague", "", "../cancun", "cancun/..", None])
def test_unknown_evm_version_is_a_clear_error(version: Any) -> None:
    for attempt in (lambda: load_artifact("Inbox", version), lambda: artifact_names(version)):
        with pytest.raises(ArtifactError) as raised:
            attempt()
        assert str(raised.value) == (
            f"unknown EVM version {version!r} (known: {', '.join(EVM_VERSIONS)})"
        )


def test_an_artifact_filed_under_the_wrong_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancun build copied into shanghai/ would deploy opcodes a shanghai chain lacks."""
    (tmp_path / "shanghai").mkdir()
    shutil.copy(ARTIFACTS_DIR / "cancun" / "Outbox.json", tmp_path / "shanghai" / "Outbox.json")
    monkeypatch.setattr(contracts, "_artifacts", lambda version: tmp_path / version)
    contracts._load_artifact.cache_clear()
    try:
        with pytest.raises(
            ArtifactError, match=r"^shanghai/Outbox.json: built for EVM version 'cancun'"
        ):
            load_artifact("Outbox", evm_version="shanghai")
    finally:
        contracts._load_artifact.cache_clear()


# --------------------------------------------------------------------------- the opcodes


@pytest.mark.parametrize("name", sorted(DEPLOYABLE))
def test_shanghai_artifacts_have_no_cancun_opcode(name: str) -> None:
    artifact = load_artifact(name, evm_version="shanghai")
    assert cancun_only_opcodes(artifact.bytecode) == [], "creation code"
    assert cancun_only_opcodes(artifact.deployed_bytecode) == [], "runtime code"


def test_the_scan_sees_the_cancun_build() -> None:
    """Shows the test above can fail: cancun code (what a shanghai folder filled by a cancun
    compile would hold) does use MCOPY, in creation and runtime code alike. (Not the Outbox
    any more: `dispatch` builds its message in place and copies no memory, session 6.)"""
    for name in ("Inbox", "TokenBridge"):
        artifact = load_artifact(name, evm_version="cancun")
        assert "MCOPY" in " ".join(cancun_only_opcodes(artifact.deployed_bytecode)), name
        assert "MCOPY" in " ".join(cancun_only_opcodes(artifact.bytecode)), name


@given(width=st.integers(1, 32), data=st.data())
def test_the_scan_skips_push_data_and_metadata(width: int, data: st.DataObject) -> None:
    immediate = data.draw(st.binary(min_size=width, max_size=width))
    metadata = (
        b"\xa2\x64ipfs\x58\x22"
        + data.draw(st.binary(min_size=34, max_size=34))
        + b"\x64solc\x43\x00\x08\x1e\x00\x33"
    )
    push = bytes([0x5F + width]) + immediate
    # PUSHn <anything> STOP <trailer>: nothing to report, whatever the bytes pushed or hashed.
    assert cancun_only_opcodes(push + b"\x00" + metadata) == []
    # The same followed by real instructions: each is found, at its own offset.
    tail = bytes([0x5E, 0x5D, 0x5C])
    start = len(push) + 1
    assert cancun_only_opcodes(push + b"\x00" + tail + metadata) == [
        f"MCOPY@{start}",
        f"TSTORE@{start + 1}",
        f"TLOAD@{start + 2}",
    ]


# --------------------------------------------------------------------------- on a chain

LOCAL, REMOTE = 1, 2
OWNER = DEV_ADDRESSES[0]
USER = DEV_ADDRESSES[1]
RECIPIENT = b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[2][2:])

# A hostile home token: its transferFrom (called by TokenBridge.transferRemote) credits the
# bridge, then calls back into the bridge with whatever it was armed with and records how that
# call ended. It swallows the outcome, so the outer transfer succeeds either way and the test
# reads exactly what a reentrant call got (TokenBridge would otherwise wrap any failure of the
# token call in TokenTransferFailed).
REENTRANT_TOKEN = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

contract ReentrantToken {
    mapping(address => uint256) public balanceOf;
    address private target;
    bytes private payload;
    bool public reentered;
    bool public reentryOk;
    bytes public reentryResult;

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
    }

    function transferFrom(address, address to, uint256 amount) external returns (bool) {
        balanceOf[to] += amount;
        bytes memory call = payload;
        delete payload; // once: the reentrant call must not recurse through here
        if (call.length != 0) {
            (bool ok, bytes memory result) = target.call(call);
            reentered = true;
            reentryOk = ok;
            reentryResult = result;
        }
        return true;
    }
}
"""

REENTRANCY = keccak256(b"Reentrancy()")[:4]


@cache
def reentrant_token(evm_version: str) -> dict[str, Any]:
    """ABI and creation code of REENTRANT_TOKEN built for ``evm_version`` (with solcjs)."""
    if shutil.which("node") is None:
        missing_chain_tool("node is not installed (runs solcjs)")
    compiler_input = {
        "language": "Solidity",
        "sources": {"ReentrantToken.sol": {"content": REENTRANT_TOKEN}},
        # Only the EVM version matters for this test double; without the artifacts' optimizer
        # and via-IR pipeline it compiles in ~3 s instead of ~8.
        "settings": {
            "evmVersion": evm_version,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }
    _, output = compile_sources(compiler_input)
    built = output["contracts"]["ReentrantToken.sol"]["ReentrantToken"]
    return {"abi": built["abi"], "bytecode": "0x" + built["evm"]["bytecode"]["object"]}


@pytest.fixture(scope="module")
def shanghai_anvil() -> Iterator[AnvilProcess]:
    """An automining anvil executing the shanghai fork (no EIP-1153, no MCOPY)."""
    try:
        anvil_binary()
    except AnvilError as error:
        missing_chain_tool(str(error))
    chain = start_anvil(chain_id=31_337, block_time=None, extra_args=("--hardfork", "shanghai"))
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture(params=EVM_VERSIONS)
def chain(
    request: pytest.FixtureRequest, anvil: AnvilProcess, shanghai_anvil: AnvilProcess
) -> tuple[str, Web3]:
    """(EVM version, a chain executing it): the session anvil runs cancun or newer."""
    version: str = request.param
    node = shanghai_anvil if version == "shanghai" else anvil
    return version, Web3(Web3.HTTPProvider(node.rpc_url))


def deploy(w3: Web3, abi: list[dict[str, Any]], bytecode: bytes | str, *args: object) -> Contract:
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(*args).transact({"from": OWNER})
    )
    assert receipt["status"] == 1
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=abi)


def deploy_artifact(w3: Web3, evm_version: str, name: str, *args: object) -> Contract:
    artifact = load_artifact(name, evm_version=evm_version)
    return deploy(w3, artifact.abi, artifact.bytecode, *args)


def transact(fn: Any, sender: str = OWNER) -> int:
    """Send ``fn`` from ``sender``; return the gas it used (it must succeed)."""
    receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
    assert receipt["status"] == 1
    return int(receipt["gasUsed"])


def bridge_with_route(w3: Web3, evm_version: str, token: Contract) -> Contract:
    """A TokenBridge of ``evm_version`` that may send ``token`` to REMOTE."""
    outbox = deploy_artifact(w3, evm_version, "Outbox", LOCAL)
    inbox = deploy_artifact(w3, evm_version, "Inbox", LOCAL, OWNER)
    bridge = deploy_artifact(
        w3, evm_version, "TokenBridge", outbox.address, inbox.address, LOCAL, OWNER
    )
    transact(bridge.functions.setRemote(REMOTE, b"\x22" * 32))
    transact(bridge.functions.registerHomeToken(token.address, REMOTE))
    return bridge


def test_the_shanghai_chain_lacks_the_cancun_opcodes(
    anvil: AnvilProcess, shanghai_anvil: AnvilProcess
) -> None:
    """The fixture is what it claims: a shanghai chain refuses MCOPY and TSTORE, which the
    session's anvil runs, so the transfers below prove the shanghai build runs where the cancun
    one would not."""
    mcopy = bytes([0x60, 0, 0x60, 0, 0x60, 0, 0x5E, 0x00])  # MCOPY(0, 0, 0); STOP
    tstore = bytes([0x60, 1, 0x60, 0, 0x5D, 0x00])  # TSTORE(0, 1); STOP
    newer = Web3(Web3.HTTPProvider(anvil.rpc_url))
    older = Web3(Web3.HTTPProvider(shanghai_anvil.rpc_url))
    for code in (mcopy, tstore):
        newer.eth.call({"from": OWNER, "data": Web3.to_hex(code)})
        with pytest.raises(Web3RPCError, match="NotActivated"):
            older.eth.call({"from": OWNER, "data": Web3.to_hex(code)})


def test_a_token_transfer_runs_on_its_evm_version(chain: tuple[str, Web3]) -> None:
    """Deploy the whole sending side from one version's artifacts and lock tokens twice: the
    second transfer shows the reentrancy guard is released after the first."""
    evm_version, w3 = chain
    token = deploy_artifact(w3, evm_version, "TestToken", "Test", "TST", 18)
    bridge = bridge_with_route(w3, evm_version, token)
    transact(token.functions.mint(USER, 10**18), USER)
    transact(token.functions.approve(bridge.address, 10**18), USER)
    for _ in range(2):
        transact(bridge.functions.transferRemote(token.address, 1000, REMOTE, RECIPIENT), USER)
    assert bridge.functions.locked(token.address, REMOTE).call() == 2000
    assert token.functions.balanceOf(bridge.address).call() == 2000


@pytest.mark.parametrize("entry", ["transferRemote", "handle"])
def test_the_bridge_refuses_reentry(chain: tuple[str, Web3], entry: str) -> None:
    """A token called by transferRemote re-enters the bridge: the inner call reverts
    Reentrancy() (not merely NotInbox for handle: the guard itself must hold), while the outer
    transfer completes; then an honest transfer of the same token still passes."""
    evm_version, w3 = chain
    built = reentrant_token(evm_version)
    token = deploy(w3, built["abi"], built["bytecode"])
    bridge = bridge_with_route(w3, evm_version, token)
    if entry == "transferRemote":
        inner = bridge.encode_abi("transferRemote", args=[token.address, 5, REMOTE, RECIPIENT])
    else:
        inner = bridge.encode_abi("handle", args=[REMOTE, b"\x22" * 32, b"\x00" * 128])
    transact(token.functions.arm(bridge.address, inner))

    transact(bridge.functions.transferRemote(token.address, 7, REMOTE, RECIPIENT), USER)
    assert token.functions.reentered().call()
    assert not token.functions.reentryOk().call()
    assert token.functions.reentryResult().call() == REENTRANCY
    assert bridge.functions.locked(token.address, REMOTE).call() == 7  # the outer one only

    transact(bridge.functions.transferRemote(token.address, 3, REMOTE, RECIPIENT), USER)
    assert bridge.functions.locked(token.address, REMOTE).call() == 10
