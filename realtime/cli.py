"""`realtime` command line: the one registry of sub-commands (`COMMANDS`), benchmarks included.

A command is a module exposing `HELP: str`, `DESCRIPTION: str`, `add_arguments(parser)` and
`run(args) -> int`, with light module-level imports (torch and friends are imported inside `run`), so `--help`
is fast. A group (``bench``) maps names to such modules and becomes ``realtime bench <name>``; to add a command
or a benchmark, add its module here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol, cast

PROG = "realtime"
DESCRIPTION = "streamvoice: a streaming OpenAI-Realtime voice server for Step-Audio-2."
BENCH_HELP = "benchmarks: parser throughput, Token2Wav speed, end-to-end latency, HTTP speech streams"
BENCH_DESCRIPTION = (
    "Run one benchmark. Results go to stdout (a readable table, or one JSON object with --json); progress "
    "goes to stderr. See `realtime bench <benchmark> --help`."
)

# sub-command name -> module that implements it, or a group of them
BENCHMARKS: dict[str, str] = {
    "parser": "realtime.bench.parser",
    "e2e": "realtime.bench.e2e",
    "token2wav": "realtime.bench.token2wav",
    "speech": "realtime.bench.speech",
    "soak": "realtime.bench.soak",
    "gpu-check": "realtime.bench.gpu_check",
}
COMMANDS: dict[str, str | Mapping[str, str]] = {
    "serve": "realtime.commands.serve",
    "make-dummy": "realtime.commands.make_dummy",
    "bench": BENCHMARKS,
}
_GROUP_TEXT = {"bench": (BENCH_HELP, BENCH_DESCRIPTION)}


class CommandModule(Protocol):
    """What a command (or benchmark) module provides."""

    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def load(module_name: str) -> CommandModule:
    """Import a command module (a broken one raises: nothing is hidden)."""
    return cast(CommandModule, importlib.import_module(module_name))


def _add_commands(
    parser: argparse.ArgumentParser, commands: Mapping[str, str | Mapping[str, str]], dest: str
) -> None:
    subparsers = parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)
    for name, target in commands.items():
        if isinstance(target, str):
            module = load(target)
            sub = subparsers.add_parser(
                name,
                help=module.HELP,
                description=module.DESCRIPTION,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
            )
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
        else:
            help_text, description = _GROUP_TEXT[name]
            group = subparsers.add_parser(name, help=help_text, description=description)
            _add_commands(group, target, "benchmark" if name == "bench" else name)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    _add_commands(parser, COMMANDS, "command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `realtime` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module = cast(CommandModule, args._module)
    try:
        return module.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
