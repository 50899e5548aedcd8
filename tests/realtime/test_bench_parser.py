"""`realtime bench parser` and the bench sub-command plumbing (tiny sizes: a smoke test, not a benchmark)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from realtime.bench import BENCHMARKS, available
from realtime.bench.__main__ import main
from realtime.bench.parser import build_reply
from realtime.commands import bench
from streaming_parser import VocabLayout

TINY = ["--groups", "20", "--rounds", "1", "--min-time", "0"]


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


def test_command_module_registers_every_available_benchmark() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["parser", *TINY, "--json"])
    assert args.benchmark == "parser"
    assert set(available()) <= set(BENCHMARKS)
    assert {"parser", "e2e"} <= set(available())


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
