"""Regenerate the example proof files here: ``.venv/bin/python docs/examples/generate.py``.

Real chain data comes from ``tests/vectors/`` (see the PROVENANCE.md files there); the
Passerelle-native kinds (merkle, committee, message) are built with the light clients from
fixed demo keys, so the output is deterministic. ``evm-batch-delivery`` is made on a fresh
anvil with the devnet's contracts (and delivered there), deterministic too. The beacon
examples copy real mainnet beacon API answers unchanged; their claims are computed here by
the beacon light client.
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


def devnet_batch_example() -> dict[str, dict[str, Any]]:
    """``evm-batch-delivery``, made on a real chain: two devnet deployments (domains 1 and 2,
    ``devnet.evm``) on a fresh anvil, committee = the three demo keys (threshold 2). Origin 1
    dispatches eight messages through its Outbox, alternating destinations 2 and 3; the batch
    is destination 2's four (nonces 0, 2, 4, 6: a proof with gaps) under the checkpoint the
    Outbox itself reports (``latestCheckpoint``). The file is then delivered by the Inbox of
    domain 2 — so the example is one the contract accepted, not only the light client.
    Deterministic: a fresh anvil, fixed keys, so fixed addresses and messages."""
    from web3 import Web3  # noqa: PLC0415 - only this example needs a chain
    from web3.logs import DISCARD  # noqa: PLC0415

    from adapters.evm.contracts import load_artifact  # noqa: PLC0415
    from devnet.anvil import DEV_PRIVATE_KEYS, start_anvil  # noqa: PLC0415
    from devnet.evm import EvmDeployment, deploy_evm_chain, link_evm_chains  # noqa: PLC0415
    from light_clients.multiproof import build_multiproof, pack_messages  # noqa: PLC0415

    deployer = bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])
    members = [address_of(key) for key in DEMO_KEYS]
    with start_anvil(chain_id=31_337, block_time=None) as anvil:
        url = anvil.rpc_url
        chains = [
            EvmDeployment(
                url,
                domain,
                deploy_evm_chain(
                    url,
                    domain=domain,
                    deployer_key=deployer,
                    committee=members,
                    threshold=2,
                    home_token=domain == ORIGIN,
                ),
            )
            for domain in (ORIGIN, DESTINATION)
        ]
        link_evm_chains(*chains, deployer_key=deployer)
        origin, destination = chains
        w3 = Web3(Web3.HTTPProvider(url))
        account = w3.eth.accounts[0]
        outbox = w3.eth.contract(
            address=Web3.to_checksum_address(origin.contracts["outbox"]),
            abi=load_artifact("Outbox").abi,
        )
        ping = bytes(12) + destination.contracts["ping"]
        messages = []
        for n in range(8):
            to = DESTINATION if n % 2 == 0 else 3
            tx = outbox.functions.dispatch(to, ping, f"batch #{n}".encode())
            receipt = w3.eth.wait_for_transaction_receipt(tx.transact({"from": account}))
            (event,) = outbox.events.Dispatch().process_receipt(receipt, errors=DISCARD)
            messages.append(bytes(event["args"]["message"]))
        root, index = outbox.functions.latestCheckpoint().call()
        tree = IncrementalMerkleTree()
        tree.extend([keccak256(m) for m in messages])
        assert tree.root() == root
        checkpoint = Checkpoint(ORIGIN, bytes(12) + origin.contracts["outbox"], root, index)
        nonces = [0, 2, 4, 6]
        proof = build_multiproof(tree, nonces)
        fields = committee_fields(checkpoint)
        inbox = w3.eth.contract(
            address=Web3.to_checksum_address(destination.contracts["inbox"]),
            abi=load_artifact("Inbox").abi,
        )
        call = inbox.functions.process(
            (checkpoint.origin, checkpoint.outbox, root, index),
            b"".join(bytes.fromhex(s[2:]) for s in fields["signatures"]),
            pack_messages([messages[n] for n in nonces]),
            list(proof),
        )
        receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": account}))
        delivered = inbox.events.Delivered().process_receipt(receipt, errors=DISCARD)
        assert receipt["status"] == 1 and [e["args"]["nonce"] for e in delivered] == nonces
    return {
        "evm-batch-delivery": {
            "kind": "evm-batch-delivery",
            "messages": [hex0x(messages[n]) for n in nonces],
            "checkpoint": {
                "origin": ORIGIN,
                "outbox": hex0x(checkpoint.outbox),
                "root": hex0x(root),
                "index": index,
            },
            "proof": [hex0x(node) for node in proof],
            **fields,
            "destination": DESTINATION,
        }
    }


def main() -> None:
    """Write one example file per kind."""
    examples = native_examples() | chain_examples() | beacon_examples() | devnet_batch_example()
    for kind, obj in examples.items():
        (HERE / f"{kind}.json").write_text(json.dumps(obj, indent=2) + "\n")
        print(f"wrote {kind}.json")


if __name__ == "__main__":
    main()
