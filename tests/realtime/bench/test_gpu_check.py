"""`realtime bench gpu-check --device cpu --quick`: the report's code path, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realtime.cli import build_parser

pytestmark = pytest.mark.slow


def test_quick_cpu_run_writes_one_report_with_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime.bench import gpu_check

    out = tmp_path / "report.json"
    args = build_parser().parse_args(
        [
            "bench", "gpu-check", "--device", "cpu", "--quick", "--prompt-seconds", "1",
            "--streams", "1", "2", "--cache-dir", str(tmp_path), "--out", str(out), "--arm-repeats", "1",
            "--no-compile",  # the compile arms are held to parity by tests/token2wav/test_compiled.py
        ]
    )  # fmt: skip
    assert gpu_check.run(args) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    sections = report["sections"]
    assert set(sections) == {"parity", "precision", "streaming", "batched", "memory", "arms"}
    assert sections["parity"]["ok"] is True
    assert sections["parity"]["pcm_max_abs_device_vs_cpu"] == 0.0  # CPU against CPU: same kernels
    assert set(sections["precision"]) >= {"bfloat16", "float16"}
    assert sections["streaming"]["first_pcm_s"] > 0
    assert {"1", "2"} <= set(sections["batched"])
    assert sections["batched"]["2"]["audio_s_per_s"] > 0
    memory = sections["memory"]
    assert 0 < memory["stream_dit_mb_after_3s"] <= memory["stream_dit_bound_mb"]
    assert memory["stream_dit_mb_after_3s"] < memory["stream_owned_mb_after_3s"]
    arms = sections["arms"]
    assert set(arms["parity"]) == {"before", "source", "ragged"}
    assert all(arm["kept"] for arm in arms["parity"].values())
    assert arms["parity"]["before"]["pcm_max_abs_vs_before"] == 0.0
    assert set(arms["steps"]["batches"]) == {"1", "2"}
    assert arms["steps"]["batches"]["2"]["ragged"]["step_s"] > 0
    assert "skipped" in arms["compile-cudagraphs"]


def test_missing_cuda_is_a_clear_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from realtime.bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = build_parser().parse_args(["bench", "gpu-check", "--device", "cuda", "--quick"])
    assert gpu_check.run(args) == 2
    assert "CUDA is not available" in capsys.readouterr().err
