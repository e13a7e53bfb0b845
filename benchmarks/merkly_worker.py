"""Timings of merkly 1.0.2, run *inside* benchmarks/.merkly-venv by bench_merkle.py.

merkly pins pydantic<2, which the project venv cannot hold, hence a separate interpreter.
This script imports nothing from Passerelle. Usage::

    python merkly_worker.py LEAVES PROOFS VERIFIES REPEAT

It prints one JSON object: seconds for each repeat of the build (leaf hashing + root), of
PROOFS proof generations, and of VERIFIES verifications, plus the root for a cross-check.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version

from merkly.mtree import MerkleTree


def main() -> None:
    """Time merkly's build, proof and verify on LEAVES string leaves and print JSON."""
    leaves_n, proofs_n, verifies_n, repeat = (int(arg) for arg in sys.argv[1:5])
    leaves = [f"leaf-{i}" for i in range(leaves_n)]
    step = max(1, leaves_n // proofs_n)
    targets = [leaves[(i * step) % leaves_n] for i in range(proofs_n)]

    build = []
    tree = None
    for _ in range(repeat):
        start = time.perf_counter()
        tree = MerkleTree(leaves)
        root = tree.root
        build.append(time.perf_counter() - start)
    assert tree is not None

    start = time.perf_counter()
    proofs = [tree.proof(leaf) for leaf in targets]
    proof_times = [time.perf_counter() - start]

    verify_times = []
    ok = True
    for _ in range(max(1, repeat // 2)):
        start = time.perf_counter()
        for i in range(verifies_n):
            ok &= tree.verify(proofs[i % len(proofs)], targets[i % len(targets)])
        verify_times.append(time.perf_counter() - start)

    print(
        json.dumps(
            {
                "merkly_version": version("merkly"),
                "python": sys.version.split()[0],
                "leaves": leaves_n,
                "proofs": proofs_n,
                "verifies": verifies_n,
                "build_s": build,
                "proofs_s": proof_times,
                "verify_s": verify_times,
                "verified": ok,
                "root": root.hex(),
                "proof_lengths": sorted({len(p) for p in proofs}),
            }
        )
    )


if __name__ == "__main__":
    main()
