"""`realtime` command line: one sub-command per module under `realtime.commands`.

Each command module exposes `HELP: str`, `DESCRIPTION: str`, `add_arguments(parser)` and `run(args) -> int`,
and keeps its module-level imports light (torch and friends are imported inside `run`), so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

# sub-command name -> module that implements it
_COMMANDS: dict[str, str] = {
    "serve": "realtime.commands.serve",
    "make-dummy": "realtime.commands.make_dummy",
    "bench": "realtime.commands.bench",
}


class _CommandModule(Protocol):
    HELP: str
    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="realtime",
        description="streamvoice: a streaming OpenAI-Realtime voice server for Step-Audio-2.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in _COMMANDS.items():
        module = cast(_CommandModule, importlib.import_module(module_name))
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `realtime` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module = cast(_CommandModule, args._module)
    try:
        return module.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
