"""Ethereum verification throughput, each next to a baseline measured in the same run.

Run with ``.venv/bin/python -m benchmarks.bench_ethereum``. All inputs are the real mainnet
vectors under tests/vectors/ (block 21925176, Cancun):

(a) eth_getProof of the beacon deposit contract (8-node account proof + one 3-node storage
    proof) and of the block's fee recipient (9 nodes, no storage): ``verify_get_proof`` on the
    raw node bytes, against py-trie's ``HexaryTrie.get_from_proof`` for the account and the
    slot plus the ``rlp`` package decoding the nodes, the account leaf and the slot value, and
    the field comparisons (baseline 1). Baseline 2 hands py-trie nodes that are already
    decoded, which flatters it: a real caller starts from the bytes of the RPC response.
(b) Receipt inclusion at index 128 (5 nodes, key 0x8180): ``verify_receipt`` (walk, exact
    byte comparison, receipt decoding) against ``get_from_proof`` + ``rlp.decode``.
(c) Header: ``verify_header_hash`` (keccak + strict decode) against eth-hash's keccak +
    ``rlp.decode``; ``header_rlp_from_json`` against eth-utils hex conversion + ``rlp.encode``.
(d) The building blocks: RLP decoding of a 532-byte branch node, keccak-256 of it.

Ours and the baseline run alternately, ``REPEAT`` rounds of ``number`` calls each; the best
round counts (time.perf_counter, best-of-N), and every round is printed as raw numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import rlp
from eth_hash.auto import keccak as eth_hash_keccak
from eth_utils.conversions import to_bytes
from trie.hexary import HexaryTrie

from light_clients.ethereum.header import header_rlp_from_json, verify_header_hash
from light_clients.ethereum.receipt import receipt_key, verify_receipt
from light_clients.ethereum.rlp import decode
from light_clients.ethereum.state import GetProof, parse_get_proof, verify_get_proof
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, to_hex

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"
REPEAT = 15


def _load(path: str) -> Any:
    return json.loads((VECTORS / path).read_text())


# ---------------------------------------------------------------------------------------------
# Timing and printing


def _race(
    ours: Callable[[], object], baseline: Callable[[], object], number: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each function, for every round; the two alternate round by round."""
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPEAT):
        for fn, out in ((ours, runs[0]), (baseline, runs[1])):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - start) / number)
    return runs


def _report(name: str, baseline_name: str, runs: tuple[list[float], list[float]]) -> None:
    ours, base = min(runs[0]), min(runs[1])
    print(f"  {name}")
    print(f"    ours      {ours * 1e6:10.2f} µs/op {1 / ours:12,.0f} op/s")
    print(f"    baseline  {base * 1e6:10.2f} µs/op {1 / base:12,.0f} op/s   ({baseline_name})")
    print(
        f"    ratio     {base / ours:10.2f}x  (baseline time / our time; > 1 means we are faster)"
    )
    print("    raw ours µs:     " + _fmt(runs[0]))
    print("    raw baseline µs: " + _fmt(runs[1]))


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v * 1e6:.1f}" for v in values)


# ---------------------------------------------------------------------------------------------
# Baselines: py-trie, the rlp package and eth-hash, used the way a caller would


def _get_from_proof(root: bytes, key: bytes, nodes: Any) -> bytes:
    """py-trie's proof walk (untyped in py-trie)."""
    value: bytes = HexaryTrie.get_from_proof(root, key, nodes)  # type: ignore[no-untyped-call]
    return value


def _pytrie_get_proof(state_root: bytes, get_proof: GetProof, predecoded: Any) -> int:
    """Verify an eth_getProof with py-trie; return the number of storage slots checked."""
    account_nodes, storage_nodes = predecoded or (
        [rlp.decode(node) for node in get_proof.account_proof],
        [[rlp.decode(node) for node in entry.proof] for entry in get_proof.storage_proofs],
    )
    leaf = _get_from_proof(state_root, eth_hash_keccak(get_proof.address), account_nodes)
    nonce, balance, storage_root, code_hash = rlp.decode(leaf)
    if (
        rlp.sedes.big_endian_int.deserialize(nonce) != get_proof.nonce
        or rlp.sedes.big_endian_int.deserialize(balance) != get_proof.balance
        or storage_root != get_proof.storage_hash
        or code_hash != get_proof.code_hash
    ):
        raise AssertionError("baseline: account mismatch")
    for entry, nodes in zip(get_proof.storage_proofs, storage_nodes, strict=True):
        value = _get_from_proof(storage_root, eth_hash_keccak(entry.key), nodes)
        proven = rlp.sedes.big_endian_int.deserialize(rlp.decode(value)) if value else 0
        if proven != entry.value:
            raise AssertionError("baseline: storage mismatch")
    return len(storage_nodes)


_HEADER_FIELDS = (
    ("parentHash", False), ("sha3Uncles", False), ("miner", False), ("stateRoot", False),
    ("transactionsRoot", False), ("receiptsRoot", False), ("logsBloom", False),
    ("difficulty", True), ("number", True), ("gasLimit", True), ("gasUsed", True),
    ("timestamp", True), ("extraData", False), ("mixHash", False), ("nonce", False),
    ("baseFeePerGas", True), ("withdrawalsRoot", False), ("blobGasUsed", True),
    ("excessBlobGas", True), ("parentBeaconBlockRoot", False), ("requestsHash", False),
)  # fmt: skip


def _baseline_header_rlp(obj: Mapping[str, Any]) -> bytes:
    """A plain JSON -> RLP writer (no fork-consistency or size checks) on eth-utils + rlp."""
    fields: list[object] = []
    for name, is_int in _HEADER_FIELDS:
        if name not in obj:
            break
        value = obj[name]
        fields.append(int(value, 16) if is_int else to_bytes(hexstr=value))
    encoded: bytes = rlp.encode(fields)
    return encoded


# ---------------------------------------------------------------------------------------------


def _bench_get_proof() -> None:
    manifest = _load("eth_state_proofs/vectors.json")
    state_root = parse_data(manifest["vectors"][0]["state_root"], "state_root")
    for file, label, number in (
        ("helios_eth_getProof_deposit_contract_21925176.json", "deposit contract", 100),
        ("helios_eth_getProof_block_miner_21925176.json", "fee recipient", 100),
    ):
        get_proof = parse_get_proof(_load(f"eth_state_proofs/{file}"))
        nodes = len(get_proof.account_proof) + sum(len(s.proof) for s in get_proof.storage_proofs)
        predecoded = (
            [rlp.decode(node) for node in get_proof.account_proof],
            [[rlp.decode(node) for node in s.proof] for s in get_proof.storage_proofs],
        )
        # Both sides must agree before they are timed.
        verdict = verify_get_proof(state_root, get_proof)
        assert len(verdict.storage) == _pytrie_get_proof(state_root, get_proof, None)

        name = (
            f"eth_getProof {label}: account + {len(get_proof.storage_proofs)} slot(s), "
            f"{nodes} nodes"
        )
        _report(
            name,
            "py-trie get_from_proof + rlp.decode of nodes and leaves",
            _race(
                partial(verify_get_proof, state_root, get_proof),
                partial(_pytrie_get_proof, state_root, get_proof, None),
                number,
            ),
        )
        _report(
            name + " (baseline given pre-decoded nodes)",
            "py-trie get_from_proof on already-decoded nodes",
            _race(
                partial(verify_get_proof, state_root, get_proof),
                partial(_pytrie_get_proof, state_root, get_proof, predecoded),
                number,
            ),
        )


def _bench_receipt() -> None:
    vectors = _load("eth_receipts_tx_tries/receipts_21925176_proofs.json")
    root = parse_data(vectors["receipts_root"], "receipts_root")
    entry = next(p for p in vectors["proofs"] if p["index"] == 128)
    proof = [parse_data(node, "proof node") for node in entry["proof_nodes"]]
    receipt = parse_data(entry["receipt_encoded"], "receipt")
    key = receipt_key(128)

    def baseline() -> object:
        nodes = [rlp.decode(node) for node in proof]
        if _get_from_proof(root, rlp.encode(128), nodes) != receipt:
            raise AssertionError("baseline: receipt mismatch")
        return rlp.decode(receipt[1:])

    assert verify_receipt(root, 128, proof, receipt).walk.key == key
    baseline()
    _report(
        f"receipt inclusion, index 128 (key {to_hex(key)}), {len(proof)} nodes, "
        f"{len(receipt)}-byte receipt",
        "py-trie get_from_proof + rlp.decode of nodes and receipt",
        _race(lambda: verify_receipt(root, 128, proof, receipt), baseline, 200),
    )


def _bench_header() -> None:
    block = _load("eth_state_proofs/helios_block_21925176.json")
    expected = parse_data(block["hash"], "block hash", 32)
    raw = header_rlp_from_json(block)
    assert _baseline_header_rlp(block) == raw

    def baseline_hash() -> object:
        if eth_hash_keccak(raw) != expected:
            raise AssertionError("baseline: header hash mismatch")
        return rlp.decode(raw)

    _report(
        f"header hash check + decode (Cancun, {len(raw)} bytes)",
        "eth-hash keccak + rlp.decode",
        _race(lambda: verify_header_hash(raw, expected), baseline_hash, 1000),
    )
    _report(
        "header RLP from eth_getBlockByNumber JSON (Cancun, 20 fields)",
        "eth-utils to_bytes/int + rlp.encode, no validation",
        _race(lambda: header_rlp_from_json(block), lambda: _baseline_header_rlp(block), 1000),
    )


def _bench_primitives() -> None:
    node = parse_get_proof(
        _load("eth_state_proofs/helios_eth_getProof_deposit_contract_21925176.json")
    ).account_proof[0]
    assert decode(node) == rlp.decode(node)
    _report(
        f"RLP decode of a {len(node)}-byte branch node",
        "rlp.decode (pyrlp 5, no rusty-rlp)",
        _race(lambda: decode(node), lambda: rlp.decode(node), 3000),
    )
    _report(
        f"keccak-256 of {len(node)} bytes",
        "eth_hash.auto keccak (pycryptodome backend)",
        _race(lambda: keccak256(node), lambda: eth_hash_keccak(node), 10000),
    )


def main() -> None:
    """Print every comparison: µs/op and op/s for ours and the baseline, ratio, raw rounds."""
    print(f"Ethereum light client, best of {REPEAT} alternating rounds (time.perf_counter)")
    print("(a) eth_getProof verification, mainnet block 21925176")
    _bench_get_proof()
    print("(b) receipt proof verification")
    _bench_receipt()
    print("(c) headers")
    _bench_header()
    print("(d) building blocks")
    _bench_primitives()


if __name__ == "__main__":
    main()
