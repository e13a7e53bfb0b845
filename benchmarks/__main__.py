"""Run every benchmark: ``python -m benchmarks`` (``make bench``)."""

from __future__ import annotations

import importlib

BENCHMARKS = (
    "bench_merkle",
    "bench_ethereum",
    "bench_grandpa",
    "bench_beacon",
    "bench_delivery_gas",
    "bench_relay",
    "bench_scale",
)


def main() -> None:
    """Run each benchmark module's ``main()`` in turn."""
    for name in BENCHMARKS:
        print(f"\n=== benchmarks.{name}")
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
