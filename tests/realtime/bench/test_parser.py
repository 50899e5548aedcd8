"""`realtime bench parser` and the bench sub-command plumbing (tiny sizes: a smoke test, not a benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realtime import cli
from realtime.bench.parser import build_reply
from streaming_parser import VocabLayout

TINY = ["--groups", "20", "--rounds", "1", "--min-time", "0"]


def main(argv: list[str]) -> int:
    return cli.main(["bench", *argv])


def test_json_output_has_ids_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parser", "--json", *TINY]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ids_per_second"] > 0
    assert {row["chunk"] for row in report["by_chunk"]} == {100, 1, 5, 1000}
    assert report["reply_ids"] == len(build_reply(VocabLayout.default(), 20, 0.5))


def test_table_output_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parser", "--clock", "wall", *TINY]) == 0
    assert "ids/s" in capsys.readouterr().out
    assert main(["parser", "--groups", "0"]) == 2


def test_one_registry_holds_every_command_and_benchmark() -> None:
    args = cli.build_parser().parse_args(["bench", "parser", *TINY, "--json"])
    assert (args.command, args.benchmark) == ("bench", "parser")
    assert cli.COMMANDS["bench"] is cli.BENCHMARKS
    assert {"parser", "e2e", "token2wav"} <= set(cli.BENCHMARKS)
    for module_name in cli.BENCHMARKS.values():
        module = cli.load(module_name)
        assert module.HELP and module.DESCRIPTION


def test_python_dash_m_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "realtime.bench", "parser", "--json", *TINY],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout)["ids_per_second"] > 0
    assert "measuring" in done.stderr
