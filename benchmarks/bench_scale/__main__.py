"""``python -m benchmarks.bench_scale [options]``."""

import sys

from benchmarks.bench_scale.cli import main

main(sys.argv[1:])
