"""Benchmarks behind `realtime bench <name>` (registered in `realtime.cli.BENCHMARKS`).

Each module follows the command contract of realtime/cli.py: ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``, with light module-level imports. Results go to stdout (a
table, or one JSON object with ``--json``); progress and logs go to stderr.
"""
