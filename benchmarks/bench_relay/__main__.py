"""``python -m benchmarks.bench_relay [options]``: the relay benchmark with its options."""

import sys

from benchmarks.bench_relay.cli import main

main(sys.argv[1:])
