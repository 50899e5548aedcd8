"""`realtime make-dummy`: write a random-weight token2wav model directory in the released layout.

The directory (flow.yaml with its HyperPyYAML tags, flow.pt, hift.pt, campplus.onnx,
speech_tokenizer_v2_25hz.onnx) loads through the same `Token2Wav.from_dir` as the real
Step-Audio-2-mini/token2wav folder, so the whole voice path can be tested and benchmarked without the real
weights. It speaks no words: every parameter is random.

Module-level imports stay light (torch is imported inside `run`), so `realtime --help` is fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

HELP = "write a random-weight token2wav model directory (tiny or full size)"
DESCRIPTION = (
    "Write a complete token2wav model directory with seeded random weights, in the layout of the released "
    "Step-Audio-2-mini/token2wav folder: flow.yaml (HyperPyYAML tags), flow.pt, hift.pt (generator. prefix, "
    "weight_g/weight_v), campplus.onnx and speech_tokenizer_v2_25hz.onnx. It loads like the real directory "
    "but produces no intelligible speech. Use --size tiny for tests and demos (a few MB, seconds) and "
    "--size full for load and speed checks at the released sizes (about 1.2 GB)."
)

_BAR_WIDTH = 30
_MIN_REDRAW_S = 0.2  # a full-size run draws ~1000 tensors; redraw the bar at most 5 times a second


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the make-dummy flags."""
    parser.add_argument(
        "out",
        metavar="OUT",
        type=Path,
        help="directory to write (created if missing; model files in it are overwritten)",
    )
    parser.add_argument(
        "--size",
        choices=("tiny", "full"),
        default="tiny",
        help="tiny: the oracle's tiny sizes (~5 MB); full: the released sizes (~1.2 GB, shows progress)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed and size give byte-identical files",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output on stderr (the final path is still printed on stdout)",
    )


class _ProgressBar:
    """tqdm-like single-line progress per stage on a text stream (stderr by default)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._stage = ""
        self._last_draw = 0.0
        self._started = time.monotonic()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        new_stage = stage != self._stage
        finished = done >= total
        if not (new_stage or finished or now - self._last_draw >= _MIN_REDRAW_S):
            return
        if new_stage:
            if self._stage:
                self._stream.write("\n")
            self._stage = stage
            self._started = now
        fraction = done / total if total > 0 else 1.0
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        self._stream.write(f"\r{stage:<32} |{bar}| {fraction:6.1%} {now - self._started:6.1f}s")
        self._stream.flush()
        self._last_draw = now

    def close(self) -> None:
        if self._stage:
            self._stream.write("\n")
            self._stream.flush()


def run(args: argparse.Namespace) -> int:
    """Write the directory; print its path on stdout. Returns the process exit code."""
    from token2wav.dummy import make_dummy_model_dir

    show_progress = args.size == "full" and not args.quiet
    bar = _ProgressBar(sys.stderr) if show_progress else None
    started = time.monotonic()
    try:
        path = make_dummy_model_dir(args.out, size=args.size, seed=args.seed, progress=bar)
    except OSError as exc:
        if bar is not None:
            bar.close()
        print(f"make-dummy: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    if bar is not None:
        bar.close()
    if not args.quiet:
        print(
            f"make-dummy: {args.size} directory written in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    print(path)
    return 0
