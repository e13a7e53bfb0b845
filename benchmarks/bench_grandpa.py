"""GRANDPA justification, Substrate storage proof and header verification, each next to a baseline.

Run with ``.venv/bin/python -m benchmarks.bench_grandpa``. Three parts, each measured in the
same run as its baseline:

(a) verify_justification of a justification with 200 precommits from a 297-authority set
    (real ed25519 keys generated here, weight 1 each, threshold 199), against the bare cost of
    the 200 ``ed_verify`` calls on the same (signature, payload, key) triples. The overhead of
    decoding and of every structural check is the ratio minus one; the target is <= 25%.
(b) verify_storage_proof on smoldot's 100 KB proof (423 nodes) for its deepest fully-proven
    key, against blake2-256 of every node of the proof (indexing the proof is unavoidable);
    plus a read from an already indexed proof (many keys, one proof).
(c) decode_header (decode + blake2-256) of a small (Rococo, 325 B) and a large (Kusama
    #7472481, 72 KB) header, against py-scale-codec (substrate-interface's decoder) decoding
    the same Header plus blake2-256, and against blake2-256 alone (the floor).

Timings are best-of-N wall clock (time.perf_counter); raw numbers follow each line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ed25519_zebra import ed_from_seed, ed_sign, ed_verify
from scalecodec.base import RuntimeConfiguration, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

import light_clients.substrate.grandpa as grandpa_module
from light_clients.hashing import blake2_256
from light_clients.hexstr import parse_data
from light_clients.substrate.grandpa import (
    AuthoritySet,
    Commit,
    Justification,
    SignedPrecommit,
    encode_justification,
    precommit_payload,
    verify_justification,
)
from light_clients.substrate.header import decode_header, encode_header
from light_clients.substrate.trie import (
    TrieProof,
    decode_node,
    decode_storage_proof,
    verify_storage_proof,
)

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "substrate"

AUTHORITIES = 297
PRECOMMITS = 200
ROUND, SET_ID = 4242, 17
TARGET_OVERHEAD = 0.25


def _best(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, list[float]]:
    """Seconds per call of ``fn`` (best of ``repeat`` runs of ``number`` calls) and every run."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return min(runs), runs


def _interleaved(
    ours: Callable[[], object], baseline: Callable[[], object], number: int, repeat: int
) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    """Alternate the two measurements so CPU frequency drift hits both alike."""
    ours_runs: list[float] = []
    base_runs: list[float] = []
    for _ in range(repeat):
        ours_runs += _best(ours, number, 1)[1]
        base_runs += _best(baseline, number, 1)[1]
    return (min(ours_runs), ours_runs), (min(base_runs), base_runs)


def _line(name: str, ours: float, baseline_name: str, baseline: float) -> None:
    """µs/op and op/s for ours and the baseline, and ours / baseline."""
    print(
        f"  {name:<36} {ours * 1e6:11.2f} µs/op {1 / ours:11,.0f} op/s | "
        f"{baseline_name:<34} {baseline * 1e6:11.2f} µs/op {1 / baseline:11,.0f} op/s | "
        f"ratio {ours / baseline:6.3f}"
    )


def _raw(label: str, values: Sequence[float]) -> None:
    print(f"    raw {label}: " + ", ".join(f"{v * 1e6:.2f}" for v in values) + " µs")


# --------------------------------------------------------------------------- (a) GRANDPA


def _justification() -> tuple[bytes, AuthoritySet, list[tuple[bytes, bytes, bytes]]]:
    keys = [ed_from_seed(blake2_256(b"bench authority %d" % i)) for i in range(AUTHORITIES)]
    authority_set = AuthoritySet(SET_ID, tuple((public, 1) for _, public in keys))
    target = decode_header(encode_header(blake2_256(b"parent"), 1_000_000, bytes(32), bytes(32)))
    payload = precommit_payload(target.hash, target.number, ROUND, SET_ID)
    precommits = []
    triples = []
    for secret, public in keys[:PRECOMMITS]:
        signature = ed_sign(secret, payload)
        precommits.append(SignedPrecommit(target.hash, target.number, signature, public))
        triples.append((signature, payload, public))
    commit = Commit(target.hash, target.number, tuple(precommits))
    raw = encode_justification(Justification(ROUND, commit, ()))
    return raw, authority_set, triples


def bench_justification() -> None:
    raw, authority_set, triples = _justification()
    proof = verify_justification(raw, authority_set)
    print(
        f"(a) GRANDPA justification: {AUTHORITIES} authorities, {len(proof.votes)} precommits, "
        f"threshold {proof.threshold}, {len(raw):,} bytes"
    )

    def bare() -> None:
        for signature, payload, public in triples:
            if not ed_verify(signature, payload, public):
                raise AssertionError("benchmark signature does not verify")

    (ours, ours_runs), (base, base_runs) = _interleaved(
        lambda: verify_justification(raw, authority_set), bare, number=1, repeat=40
    )
    _line("verify_justification", ours, f"{PRECOMMITS} x ed_verify (bare)", base)
    overhead = ours / base - 1
    verdict = "OK" if overhead <= TARGET_OVERHEAD else "ABOVE TARGET"
    print(
        f"  overhead over bare ed25519: {overhead:+.1%} (target <= {TARGET_OVERHEAD:.0%}: "
        f"{verdict}); per precommit {ours / PRECOMMITS * 1e6:.2f} µs vs "
        f"{base / PRECOMMITS * 1e6:.2f} µs"
    )
    # The difference of two noisy ~10 ms timings is itself noisy, so also time the non-crypto
    # part directly: the same call with the module's ed_verify swapped for a constant.
    namespace = vars(grandpa_module)
    namespace["ed_verify"] = lambda signature, message, public: True
    try:
        rest, rest_runs = _best(lambda: verify_justification(raw, authority_set), 5, 20)
    finally:
        namespace["ed_verify"] = ed_verify
    print(
        f"  decode + structural checks alone (ed_verify stubbed): {rest * 1e6:.2f} µs "
        f"= {rest / base:.1%} of the bare ed25519 cost"
    )
    _raw("verify_justification", ours_runs)
    _raw("bare ed_verify x200", base_runs)
    _raw("without ed25519", rest_runs)


# --------------------------------------------------------------------------- (b) storage


def _deepest_key(root: bytes, nodes: Sequence[bytes]) -> bytes:
    """The longest key whose value the proof contains (found by walking every branch)."""
    by_hash = {blake2_256(node): node for node in nodes}
    best = ""
    stack = [(by_hash[root], "")]
    while stack:
        encoded, prefix = stack.pop()
        node = decode_node(encoded)
        path = prefix + node.partial
        has_value = node.value is not None or node.value_hash in by_hash
        if has_value and len(path) % 2 == 0 and len(path) > len(best):
            best = path
        for index, child in enumerate(node.children):
            found = by_hash.get(child) if child is not None and len(child) == 32 else child
            if found is not None:
                stack.append((found, prefix + node.partial + format(index, "x")))
    return bytes.fromhex(best)


def bench_storage_proof() -> None:
    vector = json.loads((VECTORS / "storage_proofs.json").read_text())["vectors"][1]
    root = parse_data(vector["state_root"], "state_root", 32)
    nodes = list(decode_storage_proof(parse_data(vector["proof_scale"], "proof_scale")))
    key = _deepest_key(root, nodes)
    read = verify_storage_proof(root, nodes, key)
    assert read.value is not None
    size = sum(len(node) for node in nodes)
    print(
        f"(b) storage proof: {len(nodes)} nodes, {size:,} bytes; key of {len(key)} bytes, "
        f"{len(read.node_hashes)} nodes walked, value of {len(read.value)} bytes"
    )

    def hash_all() -> None:
        for node in nodes:
            blake2_256(node)

    (ours, ours_runs), (base, base_runs) = _interleaved(
        lambda: verify_storage_proof(root, nodes, key), hash_all, number=5, repeat=40
    )
    _line("verify_storage_proof", ours, "blake2-256 of every node", base)
    _raw("verify_storage_proof", ours_runs)
    _raw("blake2-256 of every node", base_runs)
    indexed = TrieProof(nodes)
    walk, walk_runs = _best(lambda: indexed.read(root, key), number=200, repeat=25)
    print(
        f"  TrieProof.read (proof already indexed)  {walk * 1e6:11.2f} µs/op {1 / walk:11,.0f} op/s"
    )
    _raw("TrieProof.read", walk_runs)


# --------------------------------------------------------------------------- (c) headers


def _scalecodec_decoder() -> Callable[[bytes], object]:
    """py-scale-codec (substrate-interface's decoder) decoding a Header, then blake2-256."""
    config = RuntimeConfiguration()
    config.update_type_registry(load_type_registry_preset("legacy"))

    def decode(raw: bytes) -> object:
        header = config.create_scale_object("Header", ScaleBytes(raw))
        header.decode()
        return blake2_256(raw), header.value

    return decode


def bench_headers() -> None:
    vectors = json.loads((VECTORS / "headers.json").read_text())["vectors"]
    scalecodec_decode = _scalecodec_decoder()
    print(
        "(c) header decode + blake2-256, next to py-scale-codec's Header decode + blake2-256 "
        "and to blake2-256 alone (the floor)"
    )
    for vector in vectors:
        if vector["name"] not in ("rococo-2021-04-08", "kusama-7472481"):
            continue
        raw = parse_data(vector["scale"], "header scale")
        name = f"decode_header {vector['name']} ({len(raw):,} B)"
        decoded = scalecodec_decode(raw)
        if not isinstance(decoded, tuple) or decoded[1]["number"] != decode_header(raw).number:
            raise AssertionError("scalecodec and decode_header disagree")

        def ours_decode(raw: bytes = raw) -> object:
            return decode_header(raw)

        def theirs_decode(raw: bytes = raw) -> object:
            return scalecodec_decode(raw)

        def hash_only(raw: bytes = raw) -> object:
            return blake2_256(raw)

        (ours, ours_runs), (base, base_runs) = _interleaved(
            ours_decode, theirs_decode, number=2 if len(raw) > 10_000 else 10, repeat=15
        )
        _line(name, ours, "scalecodec Header + blake2-256", base)
        _raw("decode_header", ours_runs)
        _raw("scalecodec", base_runs)
        number = 2000 if len(raw) < 10_000 else 20
        (ours, ours_runs), (base, base_runs) = _interleaved(ours_decode, hash_only, number, 25)
        _line(name, ours, "blake2-256 only", base)
        _raw("decode_header", ours_runs)
        _raw("blake2-256", base_runs)


def main() -> None:
    """Run the three GRANDPA/Substrate benchmarks and print the results."""
    bench_justification()
    bench_storage_proof()
    bench_headers()


if __name__ == "__main__":
    main()
