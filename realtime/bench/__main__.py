"""`python -m realtime.bench <benchmark> ...`: the same as `realtime bench <benchmark> ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from realtime.bench import add_benchmark_parsers, run_benchmark


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run one benchmark; returns its exit code."""
    parser = argparse.ArgumentParser(prog="python -m realtime.bench", description="streamvoice benchmarks")
    add_benchmark_parsers(parser)
    args = parser.parse_args(argv)
    try:
        return run_benchmark(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
