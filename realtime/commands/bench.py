"""`realtime bench <benchmark>`: performance measurements (not tests); see realtime/bench/."""

from __future__ import annotations

import argparse

from realtime.bench import add_benchmark_parsers, run_benchmark

HELP = "benchmarks: parser throughput, Token2Wav speed, end-to-end latency"
DESCRIPTION = (
    "Run one benchmark. Results go to stdout (a readable table, or one JSON object with --json); progress "
    "goes to stderr. See `realtime bench <benchmark> --help`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per benchmark module of realtime/bench."""
    add_benchmark_parsers(parser)


def run(args: argparse.Namespace) -> int:
    """Run the selected benchmark and return its exit code."""
    return run_benchmark(args)
