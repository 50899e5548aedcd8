"""`realtime bench token2wav` runs end to end on the tiny oracle directory and reports every figure."""

from __future__ import annotations

import argparse
import json

import pytest

from realtime.bench import token2wav as bench
from tests.token2wav.flow_oracle import (
    REFERENCE_TINY,
    one_torch_thread,  # noqa: F401 - autouse fixture
)


def test_bench_json_has_latency_chunk_and_baseline_figures(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--model-dir", str(REFERENCE_TINY), "--seconds", "1.5", "--prompt-seconds", "2"),
            *("--threads", "1", "--baseline", "--json"),
        ]
    )
    assert bench.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert row["codes"] == 38 and row["chunks"] == 3  # windows 0-13, 10-38, final 35-38
    for key in (
        "first_pcm_s",
        "chunk_s_median",
        "flow_s_median",
        "hift_s_median",
        "rtf",
        "naive_first_pcm_s",
        "ref_prime_s",
        "ref_first_pcm_s",
        "ref_chunk_s_median",
        "ref_state_mb",
        "first_pcm_vs_ref",
        "chunk_vs_ref",
    ):
        assert row[key] > 0
    # Ratios are ours / the reference-style baseline's, from the figures of the same row.
    assert row["chunk_vs_ref"] == pytest.approx(row["chunk_s_median"] / row["ref_chunk_s_median"], rel=0.05)
    assert row["first_pcm_vs_ref_primed"] < row["first_pcm_vs_ref"]
    assert row["first_pcm_speedup"] > 0
    assert result["voice_state_mb"] > 0 and result["peak_rss_mb"] > 0


def test_bench_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        ["--model-dir", str(REFERENCE_TINY), "--seconds", "0.4", "--prompt-seconds", "2", "--threads", "1"]
    )
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "1st PCM s" in out and "RTF" in out


def test_bench_baseline_choice_runs_only_that_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--model-dir", str(REFERENCE_TINY), "--seconds", "1.5", "--prompt-seconds", "2"),
            *("--threads", "1", "--baseline", "reference", "--json"),
        ]
    )
    assert bench.run(args) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert "ref_chunk_s_median" in row and "naive_first_pcm_s" not in row


def test_bench_arms_report_the_cost_per_step_of_each_arm(capsys: pytest.CaptureFixture[str]) -> None:
    """`--arms`: per batch size, every arm's cost per step and its ratio to the first arm, same run."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--model-dir", str(REFERENCE_TINY), "--prompt-seconds", "2", "--threads", "1"),
            *("--arms", "before", "source", "ragged", "--batch-sizes", "1", "2", "--repeats", "2", "--json"),
        ]
    )
    assert bench.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    steps = result["steps"]
    assert steps["arms"] == ["before", "source", "ragged"]
    assert set(steps["warmup_s"]) == {"before", "source", "ragged"}
    for n in ("1", "2"):
        row = steps["batches"][n]
        assert row["rounds"] >= 2 * 3  # the warm-up rounds to the trimmed steady state, then 2 per arm
        for arm in ("before", "source", "ragged"):
            assert row[arm]["step_s"] > 0 and row[arm]["step_cpu_s"] > 0
        assert row["before"]["cheaper_than_before"] == 1.0
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    table_args = parser.parse_args(
        [
            *("--model-dir", str(REFERENCE_TINY), "--prompt-seconds", "1", "--threads", "1"),
            *("--arms", "before", "source", "--batch-sizes", "1", "--repeats", "1"),
        ]
    )
    assert bench.run(table_args) == 0
    out = capsys.readouterr().out
    assert "per-step cost" in out and "s/step" in out and "source" in out
