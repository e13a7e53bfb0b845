"""Regenerate the example proof files here: ``.venv/bin/python docs/examples/generate.py``.

Real chain data comes from ``tests/vectors/`` (see the PROVENANCE.md files there); the
Passerelle-native kinds (merkle, committee, message) are built with the light clients from
fixed demo keys, so the output is deterministic. The beacon examples copy real mainnet beacon
API answers unchanged; their claims are computed here by the beacon light client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from light_clients.beacon import (
    MAINNET,
    bootstrap,
    parse_bootstrap,
    parse_update,
    process_update,
)
from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import Message
from light_clients.substrate.grandpa import decode_justification

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parents[1] / "tests" / "vectors"

# Demo keys only: derived from public strings, never use them for anything of value.
DEMO_KEYS = [keccak256(f"passerelle demo attester {i}".encode()) for i in range(3)]
ORIGIN, DESTINATION = 1, 2
OUTBOX = bytes(12) + keccak256(b"passerelle demo outbox")[:20]


def hex0x(data: bytes) -> str:
    """``0x``-prefixed hex."""
    return "0x" + data.hex()


def vector(path: str) -> Any:
    """Load a JSON vector file from tests/vectors."""
    return json.loads((VECTORS / path).read_text())


def demo_messages() -> list[Message]:
    """Five messages from origin 1 to destination 2, nonces 0..4."""
    sender = bytes(12) + keccak256(b"passerelle demo sender")[:20]
    recipient = bytes(12) + keccak256(b"passerelle demo recipient")[:20]
    return [
        Message(
            version=1,
            nonce=n,
            origin=ORIGIN,
            sender=sender,
            destination=DESTINATION,
            recipient=recipient,
            body=f"hello #{n}".encode(),
        )
        for n in range(5)
    ]


def committee_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    """The committee of the three demo keys, threshold 2, and two signatures in signer order."""
    members = sorted((address_of(k), k) for k in DEMO_KEYS)
    signers = members[:2]
    return {
        "validators": [hex0x(a) for a, _ in members],
        "threshold": 2,
        "signatures": [hex0x(sign_checkpoint(k, checkpoint)) for _, k in signers],
    }


def native_examples() -> dict[str, dict[str, Any]]:
    """merkle, committee and message examples built from the demo messages."""
    messages = demo_messages()
    tree = IncrementalMerkleTree()
    for message in messages:
        tree.append(message.id)
    root = tree.root()
    checkpoint = Checkpoint(origin=ORIGIN, outbox=OUTBOX, root=root, index=tree.count - 1)
    checkpoint_json = {
        "origin": ORIGIN,
        "outbox": hex0x(OUTBOX),
        "root": hex0x(root),
        "index": checkpoint.index,
    }
    chosen = messages[3]
    branch = [hex0x(node) for node in tree.proof(chosen.nonce)]
    return {
        "merkle": {
            "kind": "merkle",
            "root": hex0x(root),
            "index": chosen.nonce,
            "branch": branch,
            "message": hex0x(chosen.encode()),
        },
        "committee": {
            "kind": "committee",
            "checkpoint": checkpoint_json,
            **committee_fields(checkpoint),
        },
        "message": {
            "kind": "message",
            "message": hex0x(chosen.encode()),
            "checkpoint": checkpoint_json,
            "branch": branch,
            **committee_fields(checkpoint),
            "destination": DESTINATION,
        },
    }


def chain_examples() -> dict[str, dict[str, Any]]:
    """Examples from real chain data in tests/vectors."""
    block = vector("eth_state_proofs/helios_block_21925176.json")
    header = {k: v for k, v in block.items() if k not in ("transactions", "withdrawals")}
    receipts = vector("eth_receipts_tx_tries/receipts_21925176_proofs.json")
    receipt = next(p for p in receipts["proofs"] if p["index"] == 1)
    substrate_header = next(
        v for v in vector("substrate/headers.json")["vectors"] if v["name"] == "polkadot-512271"
    )
    storage = vector("substrate/storage_proofs.json")["vectors"][0]
    query = storage["queries"][0]
    grandpa = vector("substrate/grandpa_smoldot.json")["justification"]
    justification = decode_justification(bytes.fromhex(grandpa["hex"]))
    return {
        "eth-header": {"kind": "eth-header", "hash": block["hash"], "header": header},
        "eth-getproof": {
            "kind": "eth-getproof",
            "state_root": block["stateRoot"],
            "proof": vector("eth_state_proofs/helios_eth_getProof_deposit_contract_21925176.json"),
        },
        "eth-receipt": {
            "kind": "eth-receipt",
            "receipts_root": receipts["receipts_root"],
            "index": 1,
            "proof": receipt["proof_nodes"],
            "receipt": receipt["receipt_encoded"],
        },
        "substrate-header": {
            "kind": "substrate-header",
            "header": substrate_header["scale"],
            "hash": substrate_header["blake2_256_hash"],
        },
        "substrate-storage": {
            "kind": "substrate-storage",
            "state_root": storage["state_root"],
            "proof": storage["proof_nodes"],
            "key": query["key"],
            "value": query["expected_value"],
        },
        "grandpa": {
            "kind": "grandpa",
            "justification": "0x" + grandpa["hex"],
            "set_id": grandpa["set_id_recovered"],
            "authorities": [
                {"id": hex0x(p.authority), "weight": 1} for p in justification.commit.precommits
            ],
        },
    }


# The beacon-update example: the bootstrap (period 862) and the first two of the six real
# updates. updates[0] is signed in period 862 and teaches the next committee (period 863);
# updates[1] is signed by that committee and finalizes a header in period 863: the smallest real
# chain that both crosses a sync-committee period and advances finality. Every further update
# adds ~70 KB (512 keys); the vectors' finality update is signed in period 867, so it would need
# all five updates before it (~420 KB).
BEACON_UPDATES = 2


def beacon_examples() -> dict[str, dict[str, Any]]:
    """beacon-bootstrap and beacon-update from the mainnet Capella vectors (eth_consensus_lc)."""
    block_root = vector("eth_consensus_lc/expected.json")["trusted_checkpoint_block_root"]
    bootstrap_json = vector("eth_consensus_lc/bootstrap.json")
    updates_json = vector("eth_consensus_lc/updates.json")[:BEACON_UPDATES]
    store = bootstrap(parse_bootstrap(bootstrap_json), bytes.fromhex(block_root[2:]), MAINNET)
    for update in updates_json:
        store = process_update(store, parse_update(update)).store
    finalized = store.finalized_header
    return {
        "beacon-bootstrap": {
            "kind": "beacon-bootstrap",
            "block_root": block_root,
            "bootstrap": bootstrap_json,
        },
        "beacon-update": {
            "kind": "beacon-update",
            "block_root": block_root,
            "finalized_header_root": hex0x(finalized.beacon.hash_tree_root()),
            "execution_state_root": hex0x(finalized.execution.state_root),
            "execution_block_number": finalized.execution.block_number,
            "bootstrap": bootstrap_json,
            "updates": updates_json,
        },
    }


def main() -> None:
    """Write one example file per kind."""
    for kind, obj in (native_examples() | chain_examples() | beacon_examples()).items():
        (HERE / f"{kind}.json").write_text(json.dumps(obj, indent=2) + "\n")
        print(f"wrote {kind}.json")


if __name__ == "__main__":
    main()
