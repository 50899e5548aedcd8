"""Every command and every flag of the ``realtime`` CLI explains itself in ``--help``."""

from __future__ import annotations

import argparse

from realtime.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in described:
                    missing.append(f"{path} {name} (command)")
                missing += _walk(sub, f"{path} {name}")
        elif not action.help and not isinstance(action, argparse._HelpAction):
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_flag_has_help() -> None:
    assert _walk(build_parser(), "realtime") == []
