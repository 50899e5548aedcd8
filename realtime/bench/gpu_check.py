"""`realtime bench gpu-check`: one command, one JSON report of what a GPU machine can tell us about Token2Wav.

Sections (each timed; a section that would overrun `--budget-s` is skipped and says so):

* ``parity``: the device path (fp32) against the CPU fp32 decode of the same codes, weights, noise and
  deterministic vocoder source (max |PCM difference|), streaming and batched;
* ``precision``: bf16 and fp16 flow against fp32 on the device (mel and PCM error, PCM SNR);
* ``streaming``: one stream at full size: time to first PCM (stream start included), steady chunk, RTF;
* ``batched``: 1/4/16/32 streams (``--quick``: 1/2/4) decoded together through the batched path: aggregate
  audio seconds per second, time to first PCM for streams started together, the first PCM of a new stream
  arriving while the others are busy, and the batch's steady chunk time;
* ``memory``: bytes one stream owns (measured, and its bound) and, on CUDA, allocator growth per stream;
* ``arms``: the decoder's execution arms (token2wav/options.py: batched NSF source, ragged attention,
  `torch.compile` of the DiT pass, and on CUDA the compiled pass with CUDA graphs, ``mode="reduce-overhead"``):
  each one's PCM against the eager arm (kept only within the parity tolerance), then the cost per step of
  the kept arms at each batch size, interleaved (``--quick``: batch 1 and 2).

It runs on any device; ``--device cpu --quick`` uses the tiny model and finishes in well under a minute
(`make test` covers this path). Random weights (`make-dummy`) unless ``--model-dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELP = (
    "Token2Wav on a GPU in one JSON report: parity, bf16/fp16 error, streaming, batched throughput, memory, "
    "execution arms"
)
DESCRIPTION = __doc__ or HELP

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamvoice" / "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench gpu-check`."""
    parser.add_argument("--device", default="cuda", help="torch device to check (cuda, cuda:1, cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny model, few streams: a fast smoke run")
    parser.add_argument("--model-dir", type=Path, default=None, help="a real token2wav directory instead")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where dummy models are kept")
    parser.add_argument("--prompt-seconds", type=float, default=6.0, help="voice prompt length")
    parser.add_argument(
        "--streams", type=int, nargs="+", default=None, help="batch sizes (default 1 4 16 32)"
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip sections that would overrun this")
    parser.add_argument(
        "--no-compile", action="store_true", help="arms section without the torch.compile / CUDA-graph arms"
    )
    parser.add_argument(
        "--arm-repeats", type=int, default=3, help="timed rounds per arm and batch size in the arms section"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report to this file")


class _Clock:
    """Wall-clock budget for the whole check."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def run(args: argparse.Namespace) -> int:
    """Run every section that fits the budget; print the JSON report."""
    import torch

    from realtime.bench import gpu_sections as sections

    clock = _Clock(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: {args.device} requested but CUDA is not available", file=sys.stderr)
        return 2
    size = "tiny" if args.quick else "full"
    root = args.model_dir or sections.dummy_dir(args.cache_dir, args.quick)
    report: dict[str, Any] = {
        "benchmark": "gpu-check",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "model": str(args.model_dir) if args.model_dir else f"random weights, {size}",
        "quick": args.quick,
        "prompt_seconds": args.prompt_seconds,
        "sections": {},
    }
    streams = args.streams or ([1, 2, 4] if args.quick else [1, 4, 16, 32])
    seconds = 2.0 if args.quick else 6.0
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("parity", lambda: sections.parity(root, device, args.prompt_seconds)),
        ("precision", lambda: sections.precision(root, device, args.prompt_seconds)),
        ("streaming", lambda: sections.streaming(root, device, args.prompt_seconds, seconds)),
        (
            "batched",
            lambda: sections.batched(root, device, args.prompt_seconds, streams, seconds, clock.left),
        ),
        ("memory", lambda: sections.memory(root, device, args.prompt_seconds)),
    ]
    arm_counts = [1, 2] if args.quick else [1, 4, 8]
    plan.append(
        (
            "arms",
            lambda: sections.arms(
                root, device, args.prompt_seconds, arm_counts, args.arm_repeats, not args.no_compile
            ),
        )
    )
    status = 0
    for name, section in plan:
        if clock.left() <= 0:
            report["sections"][name] = {"skipped": "time budget spent"}
            continue
        t0 = time.perf_counter()
        try:
            result = section()
        except Exception as exc:  # a failing section is reported, the others still run
            result = {"error": f"{type(exc).__name__}: {exc}"}
            status = 1
        result["section_s"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = result
        print(f"gpu-check: {name} done in {result['section_s']} s", file=sys.stderr, flush=True)
    parity = report["sections"].get("parity", {})
    if parity.get("ok") is False:
        status = 1
    report["total_s"] = round(time.perf_counter() - clock.start, 2)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return status
