"""Benchmarks behind `realtime bench <name>` (and `python -m realtime.bench <name>`).

Each module named in `BENCHMARKS` follows the CLI module contract of realtime/cli.py: ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``, with light module-level imports (torch and
the like are imported inside ``run``). Results go to stdout (a table, or one JSON object with ``--json``);
progress and logs go to stderr. To add a benchmark, add its module here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Protocol, cast

# sub-command name -> module implementing it
BENCHMARKS: dict[str, str] = {
    "parser": "realtime.bench.parser",
    "e2e": "realtime.bench.e2e",
    "token2wav": "realtime.bench.token2wav",
}


class BenchModule(Protocol):
    """What a benchmark module provides (the `realtime.commands` contract)."""

    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def available() -> dict[str, BenchModule]:
    """Import and return every benchmark whose module exists, in `BENCHMARKS` order.

    A module that is not there yet is left out (the list names benchmarks other work adds); a module that
    exists but fails to import raises, so a broken benchmark is never hidden.
    """
    modules: dict[str, BenchModule] = {}
    for name, module_name in BENCHMARKS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        modules[name] = cast(BenchModule, importlib.import_module(module_name))
    return modules


def add_benchmark_parsers(parser: argparse.ArgumentParser) -> None:
    """Register one sub-command per available benchmark on ``parser``; the module lands in ``args``."""
    subcommands = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module in available().items():
        sub = subcommands.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_bench_module=module)


def run_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark selected by `add_benchmark_parsers`."""
    module = cast(BenchModule, args._bench_module)
    return module.run(args)
