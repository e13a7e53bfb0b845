"""Proof files: the JSON bundles ``passerelle proof verify|inspect`` check offline.

The formats are fixed by docs/design.md ("Proof files"). Each kind has a parser (JSON → typed
claim; problems are :class:`FieldError`, exit 2) and a checker (claim → :class:`Report`;
rejections are light-client :class:`VerificationError`, exit 1). Nothing a file says about its
own validity is trusted: a ``verified``, ``digest`` or ``signers`` field is ignored like any
unknown field, and every hash and signature is recomputed (docs/threats.md T2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from light_clients import beacon, merkle, multiproof
from light_clients.beacon.types import (
    LightClientBootstrap,
    LightClientFinalityUpdate,
    LightClientUpdate,
)
from light_clients.committee import Checkpoint, Committee, verify_attestation
from light_clients.errors import DecodeError, VerificationError
from light_clients.ethereum import header as eth_header
from light_clients.ethereum import mpt as eth_mpt
from light_clients.ethereum import receipt as eth_receipt
from light_clients.ethereum import state as eth_state
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.message import verify_delivery
from light_clients.substrate import grandpa
from light_clients.substrate import header as sub_header
from light_clients.substrate import trie as sub_trie
from relayer.jsonfields import (
    FieldError,
    as_hex,
    as_hex_list,
    as_int,
    as_list,
    as_object,
    require,
)

# A proof file larger than this is refused before parsing (the largest real proof we ship is
# about 200 KB of JSON).
MAX_FILE_BYTES = 32 * 1024 * 1024
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

Row = tuple[str, str]


@dataclass
class Report:
    """What one file claims, how it was checked, and the verdict.

    ``valid`` is None when the file is unusable (exit 2), False when it is well-formed but
    does not prove its claim (exit 1), True when every check passed.
    """

    file: str
    kind: str | None = None
    valid: bool | None = None
    reason: str = ""
    claims: list[Row] = field(default_factory=list)
    steps: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The one-line ``--json`` object of docs/design.md: file, valid, kind, reason, details."""
        return {
            "file": self.file,
            "valid": bool(self.valid),
            "kind": self.kind,
            "reason": self.reason,
            "details": self.details,
        }


class _Mismatch(VerificationError):
    """The proof holds, but for something other than what the file claims."""


# --------------------------------------------------------------------------- kinds


def _check_merkle(obj: Mapping[str, Any], report: Report) -> None:
    root = as_hex(require(obj, "root"), "root", size=32)
    index = as_int(require(obj, "index"), "index", hi=U32_MAX)
    branch = as_hex_list(require(obj, "branch"), "branch")
    leaf = None if obj.get("leaf") is None else as_hex(obj["leaf"], "leaf", size=32)
    if leaf is not None:
        report.claims.append(("leaf", to_hex(leaf)))
    if obj.get("message") is not None:
        message = as_hex(obj["message"], "message")
        report.claims.append(("message", to_hex(message)))
        if leaf is not None and keccak256(message) != leaf:
            raise _Mismatch(f"leaf {to_hex(leaf)} is not keccak256(message)")
        leaf = keccak256(message)
        report.steps.append(("leaf = keccak256(message)", to_hex(leaf)))
    if leaf is None:
        raise FieldError("missing field 'leaf' (or 'message')")
    report.claims += [
        ("root", to_hex(root)),
        ("index", str(index)),
        ("branch", f"{len(branch)} hashes"),
    ]
    inclusion = merkle.verify_inclusion(root, leaf, index, branch)
    _merkle_steps(report, inclusion)
    report.details = {"root": to_hex(root), "index": index, "leaf": to_hex(leaf)}


def _merkle_steps(report: Report, inclusion: merkle.MerkleInclusion) -> None:
    for level, node in enumerate(inclusion.path[1:], start=1):
        side = "right" if (inclusion.index >> (level - 1)) & 1 else "left"
        report.steps.append((f"level {level:2d} (we are the {side} child)", to_hex(node)))
    report.steps.append(("computed root equals claimed root", to_hex(inclusion.root)))


def _parse_checkpoint(value: Any, name: str = "checkpoint") -> Checkpoint:
    obj = as_object(value, name)
    return Checkpoint(
        origin=as_int(require(obj, "origin"), f"{name}.origin", hi=U32_MAX),
        outbox=as_hex(require(obj, "outbox"), f"{name}.outbox", size=32),
        root=as_hex(require(obj, "root"), f"{name}.root", size=32),
        index=as_int(require(obj, "index"), f"{name}.index", hi=U32_MAX),
    )


def _parse_committee(obj: Mapping[str, Any]) -> tuple[list[bytes], int, list[bytes]]:
    validators = as_hex_list(require(obj, "validators"), "validators", size=20)
    threshold = as_int(require(obj, "threshold"), "threshold", hi=U32_MAX)
    signatures = as_hex_list(require(obj, "signatures"), "signatures")
    return validators, threshold, signatures


def _checkpoint_claims(report: Report, checkpoint: Checkpoint) -> None:
    report.claims += [
        ("checkpoint.origin", str(checkpoint.origin)),
        ("checkpoint.outbox", to_hex(checkpoint.outbox)),
        ("checkpoint.root", to_hex(checkpoint.root)),
        ("checkpoint.index", str(checkpoint.index)),
    ]


def _committee_claims(
    report: Report, validators: Sequence[bytes], threshold: int, n_sigs: int
) -> None:
    report.claims.append(("committee", f"{threshold} of {len(validators)}"))
    report.claims += [(f"validator {i}", to_hex(v)) for i, v in enumerate(validators)]
    report.claims.append(("signatures", str(n_sigs)))


def _attestation_steps(
    report: Report, digest: bytes, signers: Sequence[bytes], threshold: int
) -> None:
    report.steps.append(
        ("digest = EIP-191(keccak256(PASSERELLE/v1/checkpoint ‖ …))", to_hex(digest))
    )
    report.steps += [
        (f"signature {i} recovers to member", to_hex(s)) for i, s in enumerate(signers)
    ]
    report.steps.append(
        ("distinct signers in ascending order", f"{len(signers)} >= threshold {threshold}")
    )


def _check_committee(obj: Mapping[str, Any], report: Report) -> None:
    checkpoint = _parse_checkpoint(require(obj, "checkpoint"))
    validators, threshold, signatures = _parse_committee(obj)
    _checkpoint_claims(report, checkpoint)
    _committee_claims(report, validators, threshold, len(signatures))
    committee = Committee(members=tuple(validators), threshold=threshold)
    attestation = verify_attestation(committee, checkpoint, signatures)
    _attestation_steps(report, attestation.digest, attestation.signers, threshold)
    report.details = {
        "digest": to_hex(attestation.digest),
        "signers": [to_hex(s) for s in attestation.signers],
        "threshold": threshold,
    }


def _check_message(obj: Mapping[str, Any], report: Report) -> None:
    message = as_hex(require(obj, "message"), "message")
    checkpoint = _parse_checkpoint(require(obj, "checkpoint"))
    branch = as_hex_list(require(obj, "branch"), "branch")
    validators, threshold, signatures = _parse_committee(obj)
    destination = obj.get("destination")
    local = None if destination is None else as_int(destination, "destination", hi=U32_MAX)
    report.claims.append(("message", to_hex(message)))
    if local is not None:
        report.claims.append(("destination", str(local)))
    _checkpoint_claims(report, checkpoint)
    _committee_claims(report, validators, threshold, len(signatures))
    committee = Committee(members=tuple(validators), threshold=threshold)
    delivery = verify_delivery(
        message, checkpoint, branch, committee, signatures, local_domain=local
    )
    decoded = delivery.message
    report.steps += [
        (
            "decoded",
            f"v{decoded.version} nonce {decoded.nonce} {decoded.origin} → {decoded.destination}",
        ),
        ("sender", to_hex(decoded.sender)),
        ("recipient", to_hex(decoded.recipient)),
        ("id = keccak256(message)", to_hex(delivery.id)),
        ("origin matches checkpoint", str(checkpoint.origin)),
    ]
    if local is not None:
        report.steps.append(("destination matches", str(local)))
    _attestation_steps(report, delivery.attestation.digest, delivery.attestation.signers, threshold)
    _merkle_steps(report, delivery.inclusion)
    report.details = {
        "id": to_hex(delivery.id),
        "nonce": decoded.nonce,
        "origin": decoded.origin,
        "destination": decoded.destination,
        "signers": [to_hex(s) for s in delivery.attestation.signers],
    }


def _check_batch_delivery(obj: Mapping[str, Any], report: Report) -> None:
    """``evm-batch-delivery``: the arguments of one ``Inbox.process`` call (docs/proofs.md):
    messages in ascending nonce order, the checkpoint, the committee's signatures and ONE
    multiproof of all the messages, checked exactly as the inbox does."""
    messages = as_hex_list(require(obj, "messages"), "messages")
    checkpoint = _parse_checkpoint(require(obj, "checkpoint"))
    proof = as_hex_list(require(obj, "proof"), "proof", size=32)
    validators, threshold, signatures = _parse_committee(obj)
    destination = obj.get("destination")
    local = None if destination is None else as_int(destination, "destination", hi=U32_MAX)
    report.claims.append(("messages", str(len(messages))))
    if local is not None:
        report.claims.append(("destination", str(local)))
    _checkpoint_claims(report, checkpoint)
    report.claims.append(("proof", f"{len(proof)} hashes"))
    _committee_claims(report, validators, threshold, len(signatures))
    committee = Committee(members=tuple(validators), threshold=threshold)
    batch = multiproof.verify_batch_delivery(
        messages, checkpoint, proof, committee, signatures, local_domain=local
    )
    report.steps += [
        (f"message {i}: nonce {m.nonce} {m.origin} → {m.destination}", to_hex(m.id))
        for i, m in enumerate(batch.messages)
    ]
    report.steps.append(("nonces strictly ascending, origin matches", str(checkpoint.origin)))
    if local is not None:
        report.steps.append(("destination matches", str(local)))
    signers = batch.attestation.signers
    _attestation_steps(report, batch.attestation.digest, signers, threshold)
    report.steps.append(
        (
            f"multiproof of {len(messages)} leaves uses all {len(proof)} hashes",
            to_hex(checkpoint.root),
        )
    )
    report.details = {
        "ids": [to_hex(m.id) for m in batch.messages],
        "nonces": [m.nonce for m in batch.messages],
        "origin": checkpoint.origin,
        "signers": [to_hex(s) for s in signers],
    }


def _check_eth_header(obj: Mapping[str, Any], report: Report) -> None:
    expected = as_hex(require(obj, "hash"), "hash", size=32)
    encodings: list[tuple[str, bytes]] = []
    if obj.get("header") is not None:
        header_obj = as_object(obj["header"], "header")
        try:
            encodings.append(("header", eth_header.header_rlp_from_json(header_obj)))
        except DecodeError as exc:
            raise FieldError(f"field 'header': {exc}") from None
    if obj.get("rlp") is not None:
        encodings.append(("rlp", as_hex(obj["rlp"], "rlp")))
    if not encodings:
        raise FieldError("missing field 'header' (or 'rlp')")
    report.claims.append(("hash", to_hex(expected)))
    for source, rlp in encodings:
        report.claims.append((f"{source} (RLP)", f"{len(rlp)} bytes"))
        decoded = eth_header.verify_header_hash(rlp, expected)
        report.steps += [
            (f"{source}: fork layout", decoded.fork),
            (f"{source}: keccak256(rlp) equals hash", to_hex(decoded.hash)),
        ]
    report.steps += [
        ("number", str(decoded.number)),
        ("stateRoot", to_hex(decoded.state_root)),
        ("receiptsRoot", to_hex(decoded.receipts_root)),
    ]
    report.details = {
        "number": decoded.number,
        "fork": decoded.fork,
        "state_root": to_hex(decoded.state_root),
        "receipts_root": to_hex(decoded.receipts_root),
    }


def _mpt_steps(report: Report, label: str, walk: eth_mpt.MptWalk) -> None:
    """One row per trie node walked: its kind, where it sits on the key path, its hash."""
    for node in walk.nodes:
        where = "embedded" if node.hash is None else to_hex(node.hash)
        report.steps.append((f"{label} {node.kind} @nibble {node.depth} [{node.path}]", where))
    outcome = f"absent ({walk.absence})" if walk.value is None else f"value {to_hex(walk.value)}"
    report.steps.append((f"{label} proves", outcome))


def _slot_name(key: bytes) -> str:
    """Small slot numbers as decimals (``slot 1``), hashed slots as hex."""
    number = int.from_bytes(key, "big")
    return str(number) if number < 2**32 else to_hex(key)


def _check_eth_getproof(obj: Mapping[str, Any], report: Report) -> None:
    state_root = as_hex(require(obj, "state_root"), "state_root", size=32)
    proof_obj = as_object(require(obj, "proof"), "proof")
    try:
        get_proof = eth_state.parse_get_proof(proof_obj)
    except DecodeError as exc:
        raise FieldError(f"field 'proof': {exc}") from None
    report.claims += [
        ("state_root", to_hex(state_root)),
        ("address", to_hex(get_proof.address)),
        ("nonce", str(get_proof.nonce)),
        ("balance", str(get_proof.balance)),
        ("storageHash", to_hex(get_proof.storage_hash)),
        ("codeHash", to_hex(get_proof.code_hash)),
    ]
    report.claims += [(f"slot {_slot_name(s.key)}", str(s.value)) for s in get_proof.storage_proofs]
    verdict = eth_state.verify_get_proof(state_root, get_proof)
    _mpt_steps(report, "account", verdict.account_walk)
    report.steps.append(("account", "matches the claim" if verdict.account else "proven absent"))
    for slot in verdict.storage:
        _mpt_steps(report, f"slot {_slot_name(slot.key)}", slot.walk)
    report.details = {
        "address": to_hex(get_proof.address),
        "account_exists": verdict.account is not None,
        "storage_slots": len(get_proof.storage_proofs),
    }


def _check_eth_receipt(obj: Mapping[str, Any], report: Report) -> None:
    root = as_hex(require(obj, "receipts_root"), "receipts_root", size=32)
    index = as_int(require(obj, "index"), "index", hi=U64_MAX)
    proof = as_hex_list(require(obj, "proof"), "proof")
    raw = as_hex(require(obj, "receipt"), "receipt")
    report.claims += [
        ("receipts_root", to_hex(root)),
        ("index", str(index)),
        ("proof", f"{len(proof)} nodes"),
        ("receipt", f"{len(raw)} bytes"),
    ]
    inclusion = eth_receipt.verify_receipt(root, index, proof, raw)
    decoded = inclusion.receipt
    report.steps.append(("trie key = rlp(index)", to_hex(eth_receipt.receipt_key(index))))
    _mpt_steps(report, "receipt", inclusion.walk)
    report.steps.append(
        ("proven value equals receipt", f"type {decoded.tx_type}, {len(decoded.logs)} logs")
    )
    report.steps += [
        (
            f"log {i} emitter",
            to_hex(log.address) + (f" topic0 {to_hex(log.topics[0])}" if log.topics else ""),
        )
        for i, log in enumerate(decoded.logs)
    ]
    report.details = {"index": index, "tx_type": decoded.tx_type, "logs": len(decoded.logs)}


def _check_substrate_header(obj: Mapping[str, Any], report: Report) -> None:
    data = as_hex(require(obj, "header"), "header")
    expected = as_hex(require(obj, "hash"), "hash", size=32)
    report.claims += [("hash", to_hex(expected)), ("header", f"{len(data)} bytes")]
    decoded = sub_header.verify_header_hash(data, expected)
    report.steps += [
        ("blake2-256(header) equals hash", to_hex(decoded.hash)),
        ("number", str(decoded.number)),
        ("parent", to_hex(decoded.parent_hash)),
        ("stateRoot", to_hex(decoded.state_root)),
        ("digest items", str(len(decoded.digest))),
    ]
    changes = sub_header.grandpa_changes(decoded)
    report.steps += [("GRANDPA change", type(c).__name__) for c in changes]
    report.details = {
        "number": decoded.number,
        "parent_hash": to_hex(decoded.parent_hash),
        "state_root": to_hex(decoded.state_root),
        "grandpa_changes": len(changes),
    }


def _check_substrate_storage(obj: Mapping[str, Any], report: Report) -> None:
    root = as_hex(require(obj, "state_root"), "state_root", size=32)
    proof = as_hex_list(require(obj, "proof"), "proof")
    key = as_hex(require(obj, "key"), "key")
    if "value" not in obj:
        raise FieldError("missing field 'value' (use null to claim absence)")
    claimed = None if obj["value"] is None else as_hex(obj["value"], "value")
    report.claims += [
        ("state_root", to_hex(root)),
        ("key", to_hex(key)),
        ("value", "absent" if claimed is None else to_hex(claimed)),
        ("proof", f"{len(proof)} nodes"),
    ]
    read = sub_trie.verify_storage_proof(root, proof, key)
    for step in read.steps:
        where = "inline" if step.node_hash is None else to_hex(step.node_hash)
        report.steps.append((f"{step.kind.value} @nibble {step.depth} [{step.partial}]", where))
    proven = "absent" if read.value is None else to_hex(read.value)
    report.steps.append(("proven value", proven))
    if read.value != claimed:
        raise _Mismatch(
            f"proof shows {proven} for key {to_hex(key)}, file claims "
            f"{'absent' if claimed is None else to_hex(claimed)}"
        )
    report.details = {"key": to_hex(key), "present": claimed is not None}


def _parse_authorities(value: Any) -> tuple[tuple[bytes, int], ...]:
    out = []
    for i, item in enumerate(as_list(value, "authorities")):
        entry = as_object(item, f"authorities[{i}]")
        out.append(
            (
                as_hex(require(entry, "id"), f"authorities[{i}].id", size=32),
                as_int(require(entry, "weight"), f"authorities[{i}].weight", hi=U64_MAX),
            )
        )
    return tuple(out)


def _check_grandpa(obj: Mapping[str, Any], report: Report) -> None:
    justification = as_hex(require(obj, "justification"), "justification")
    authorities = _parse_authorities(require(obj, "authorities"))
    set_id = as_int(require(obj, "set_id"), "set_id", hi=U64_MAX)
    header = None if obj.get("header") is None else as_hex(obj["header"], "header")
    report.claims += [
        ("set_id", str(set_id)),
        ("authorities", f"{len(authorities)}, total weight {sum(w for _, w in authorities)}"),
        ("justification", f"{len(justification)} bytes"),
    ]
    expected_target = None
    if header is not None:
        decoded = sub_header.decode_header(header)
        expected_target = (decoded.hash, decoded.number)
        report.claims.append(("header", f"#{decoded.number} {to_hex(decoded.hash)}"))
    authority_set = grandpa.AuthoritySet(set_id=set_id, authorities=authorities)
    proof = grandpa.verify_justification(justification, authority_set, expected_target)
    report.steps += [
        ("target", f"#{proof.target_number} {to_hex(proof.target_hash)}"),
        ("round", str(proof.round)),
    ]
    report.steps += [(f"precommit by {to_hex(key)}", f"weight {w}") for key, w in proof.signers]
    report.steps.append(
        (
            "signed weight above 2/3",
            f"{proof.signed_weight} >= {proof.threshold} of {proof.total_weight}",
        )
    )
    report.details = {
        "target_hash": to_hex(proof.target_hash),
        "target_number": proof.target_number,
        "round": proof.round,
        "signed_weight": proof.signed_weight,
        "total_weight": proof.total_weight,
    }


# Beacon light client (docs/proofs.md "beacon-bootstrap", "beacon-update"): mainnet unless the
# file names its chain in "config" ({"preset", "genesis_validators_root", "forks"}).
BEACON_CONFIG = beacon.MAINNET


def _beacon_config(obj: Mapping[str, Any]) -> beacon.BeaconConfig:
    """The chain a beacon file is for: its optional ``config`` (the attester's TOML table,
    as JSON) or mainnet. The file picks the chain, not the trust: a config of the wrong chain
    only makes the signatures fail (the domain mixes in the genesis validators root)."""
    value = obj.get("config")
    if value is None:
        return BEACON_CONFIG
    table = as_object(value, "config")
    keys = ("preset", "genesis_validators_root", "forks")
    unknown = sorted(set(table) - set(keys))
    missing = [key for key in keys if key not in table]
    if unknown or missing:
        raise FieldError(f"field 'config': missing {missing}, unexpected {unknown}")
    try:
        return beacon.BeaconConfig.from_schedule(*(table[key] for key in keys))
    except beacon.InvalidBeaconConfig as exc:
        raise FieldError(f"field 'config': {exc}") from None


# A beacon object whose JSON has the right shape but whose BLS key or signature is not a point
# of the curve (or of its subgroup) is a broken proof, like a committee signature with a high s
# (exit 1), not an unusable file. The parser reports both as MalformedBeaconData; the point
# errors are the ones that name the curve.
_BLS_POINT_ERROR = "BLS12-381"


class _BeaconStepFailed(VerificationError):
    """A bootstrap or update was rejected; the message names which one and why."""


_T = TypeVar("_T")


def _parse_beacon(
    parser: Callable[[object, beacon.BeaconConfig], _T],
    value: Any,
    name: str,
    config: beacon.BeaconConfig,
) -> _T | VerificationError:
    """Parse one beacon API object; a shape problem is a FieldError (exit 2), an invalid BLS
    point is returned as the rejection to raise when the chain reaches this object."""
    try:
        return parser(value, config)
    except beacon.MalformedBeaconData as exc:
        if _BLS_POINT_ERROR in str(exc):
            return _BeaconStepFailed(f"{name}: {exc}")
        raise FieldError(f"field {name!r}: {exc}") from None


_BeaconUpdate = LightClientUpdate | LightClientFinalityUpdate


def _rejected(name: str, exc: VerificationError) -> VerificationError:
    """The light client's rejection, prefixed once with the object it rejected."""
    message = str(exc)
    return _BeaconStepFailed(message if message.startswith(f"{name}:") else f"{name}: {message}")


def _parsed(value: _T | VerificationError) -> _T:
    if isinstance(value, VerificationError):
        raise value
    return value


def _beacon_bootstrap(
    obj: Mapping[str, Any], report: Report
) -> tuple[bytes, LightClientBootstrap | VerificationError, beacon.BeaconConfig]:
    config = _beacon_config(obj)
    block_root = as_hex(require(obj, "block_root"), "block_root", size=32)
    data = _parse_beacon(beacon.parse_bootstrap, require(obj, "bootstrap"), "bootstrap", config)
    if config is not BEACON_CONFIG:
        report.claims.append(
            (
                "chain",
                f"{config.preset.name} preset, genesis validators root "
                f"{to_hex(config.genesis_validators_root)}",
            )
        )
    report.claims.append(("trusted block root", to_hex(block_root)))
    return block_root, data, config


def _bootstrap_store(
    block_root: bytes,
    data: LightClientBootstrap | VerificationError,
    report: Report,
    config: beacon.BeaconConfig,
) -> beacon.LightClientStore:
    store = beacon.bootstrap(_parsed(data), block_root, config)
    header = store.finalized_header
    report.steps += [
        ("bootstrap header root equals trusted root", to_hex(header.beacon.hash_tree_root())),
        ("bootstrap slot", f"{header.beacon.slot} (period {store.period})"),
        ("execution payload in body (branch)", f"block {header.execution.block_number}"),
        (
            "current sync committee in state (branch)",
            to_hex(store.current_sync_committee.hash_tree_root()),
        ),
    ]
    return store


def _header_details(store: beacon.LightClientStore) -> dict[str, Any]:
    """The ``--json`` details of a beacon kind: the store's finalized header."""
    finalized = store.finalized_header
    return {
        "slot": finalized.beacon.slot,
        "period": store.period,
        "header_root": to_hex(finalized.beacon.hash_tree_root()),
        "execution_block_number": finalized.execution.block_number,
        "execution_block_hash": to_hex(finalized.execution.block_hash),
        "execution_state_root": to_hex(finalized.execution.state_root),
    }


def _check_beacon_bootstrap(obj: Mapping[str, Any], report: Report) -> None:
    block_root, data, config = _beacon_bootstrap(obj, report)
    store = _bootstrap_store(block_root, data, report, config)
    report.steps.append(
        ("execution state root", to_hex(store.finalized_header.execution.state_root))
    )
    report.details = _header_details(store)


def _update_outcome(outcome: beacon.UpdateOutcome) -> str:
    """What an accepted update established, in a few words."""
    store = outcome.store
    done = [f"{outcome.participants}/{store.config.preset.sync_committee_size} signed"]
    if outcome.sync_committee_rotated:
        done.append(f"committee rotated to period {store.period}")
    if outcome.next_sync_committee_learned:
        done.append(f"learned committee for period {store.period + 1}")
    if outcome.finalized_advanced:
        done.append(f"finalized slot {store.finalized_header.beacon.slot}")
    else:
        done.append("finalized header unchanged")
    return ", ".join(done)


def _check_beacon_update(obj: Mapping[str, Any], report: Report) -> None:
    block_root, data, config = _beacon_bootstrap(obj, report)
    updates = [
        _parse_beacon(beacon.parse_update, item, f"updates[{i}]", config)
        for i, item in enumerate(as_list(require(obj, "updates"), "updates"))
    ]
    finality = (
        None
        if obj.get("finality_update") is None
        else _parse_beacon(
            beacon.parse_finality_update, obj["finality_update"], "finality_update", config
        )
    )
    if not updates and finality is None:
        raise FieldError("no update to verify: 'updates' is empty and no 'finality_update'")
    claimed_root = (
        None
        if obj.get("finalized_header_root") is None
        else as_hex(obj["finalized_header_root"], "finalized_header_root", size=32)
    )
    claimed_state = (
        None
        if obj.get("execution_state_root") is None
        else as_hex(obj["execution_state_root"], "execution_state_root", size=32)
    )
    claimed_number = (
        None
        if obj.get("execution_block_number") is None
        else as_int(obj["execution_block_number"], "execution_block_number", hi=U64_MAX)
    )
    if claimed_root is None and claimed_state is None:
        raise FieldError("missing field 'finalized_header_root' (or 'execution_state_root')")
    report.claims.append(
        ("updates", f"{len(updates)}" + (" and a finality update" if finality else ""))
    )
    if claimed_root is not None:
        report.claims.append(("finalized header root", to_hex(claimed_root)))
    if claimed_state is not None:
        report.claims.append(("execution state root", to_hex(claimed_state)))
    if claimed_number is not None:
        report.claims.append(("execution block number", str(claimed_number)))

    try:
        store = _bootstrap_store(block_root, data, report, config)
    except VerificationError as exc:
        raise _rejected("bootstrap", exc) from None
    chain: list[tuple[str, _BeaconUpdate | VerificationError]] = [
        (f"updates[{i}]", update) for i, update in enumerate(updates)
    ]
    if finality is not None:
        chain.append(("finality_update", finality))
    for name, item in chain:
        try:
            if isinstance(item, VerificationError):
                raise item
            update = item
            outcome = (
                beacon.process_update(store, update)
                if isinstance(update, LightClientUpdate)
                else beacon.process_finality_update(store, update)
            )
        except VerificationError as exc:
            raise _rejected(name, exc) from None
        store = outcome.store
        period = config.period(update.signature_slot)
        report.steps.append((f"{name} (signed in period {period})", _update_outcome(outcome)))

    finalized = store.finalized_header
    proven_root = finalized.beacon.hash_tree_root()
    report.steps += [
        ("finalized header", f"slot {finalized.beacon.slot}, root {to_hex(proven_root)}"),
        (
            "finalized execution payload",
            f"block {finalized.execution.block_number}, "
            f"state root {to_hex(finalized.execution.state_root)}",
        ),
    ]
    if claimed_root is not None and proven_root != claimed_root:
        raise _Mismatch(
            f"the updates finalize header {to_hex(proven_root)} (slot {finalized.beacon.slot}), "
            f"file claims {to_hex(claimed_root)}"
        )
    if claimed_state is not None and finalized.execution.state_root != claimed_state:
        raise _Mismatch(
            f"the finalized execution state root is {to_hex(finalized.execution.state_root)} "
            f"(block {finalized.execution.block_number}), file claims {to_hex(claimed_state)}"
        )
    if claimed_number is not None and finalized.execution.block_number != claimed_number:
        raise _Mismatch(
            f"the finalized execution block is {finalized.execution.block_number}, "
            f"file claims {claimed_number}"
        )
    report.steps.append(("finalized header matches the claim", "yes"))
    report.details = _header_details(store) | {"updates": len(chain)}


KINDS: dict[str, Callable[[Mapping[str, Any], Report], None]] = {
    "merkle": _check_merkle,
    "committee": _check_committee,
    "message": _check_message,
    "evm-batch-delivery": _check_batch_delivery,
    "eth-header": _check_eth_header,
    "eth-getproof": _check_eth_getproof,
    "eth-receipt": _check_eth_receipt,
    "substrate-header": _check_substrate_header,
    "substrate-storage": _check_substrate_storage,
    "grandpa": _check_grandpa,
    "beacon-bootstrap": _check_beacon_bootstrap,
    "beacon-update": _check_beacon_update,
}


# --------------------------------------------------------------------------- entry points


def load(path: Path) -> Mapping[str, Any]:
    """Read and parse one proof file; any problem is a FieldError (the file is unusable)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FieldError(f"file too large ({size} bytes, limit {MAX_FILE_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FieldError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise FieldError(f"cannot read file: {exc.__class__.__name__}: {exc}") from None
    if not text.strip():
        raise FieldError("empty file")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FieldError(f"not JSON: {exc}") from None
    return as_object(obj, "(top level)")


def check_file(path: Path) -> Report:
    """Load and check one proof file; never raises on bad input."""
    report = Report(file=str(path))
    try:
        obj = load(path)
        kind = require(obj, "kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise FieldError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        report.kind = kind
        KINDS[kind](obj, report)
    except FieldError as exc:
        report.valid, report.reason = None, f"unusable: {exc}"
    except VerificationError as exc:
        report.valid, report.reason = False, f"invalid: {exc}"
    else:
        report.valid, report.reason = True, "valid"
    return report


def exit_code(reports: Sequence[Report]) -> int:
    """docs/design.md: 0 all valid, 1 some invalid, 2 some unusable (2 wins over 1)."""
    if any(r.valid is None for r in reports):
        return 2
    if any(r.valid is False for r in reports):
        return 1
    return 0
