"""`realtime bench token2wav --arms ...`: the decoder's cost per step by batch size, one arm against another.

A step is what the server's worker asks of the decoder for one stream in one turn: one steady window
(`--chunk` codes plus the 3 look-ahead codes). N streams' steps batched in one call cost the call's wall time;
the cost per step is that time / N (the figure the worker's cost model keeps, realtime/speech/worker.py).

Each arm is a `token2wav.options.DecodeOptions` (`ARMS`): how the decoder computes, never what. All arms run in
the same process on the same model and the same N streams, one round each in turn (the order rotates every
repeat), so that a drift of the machine's speed weighs on every arm alike; the streams are first run until
their DiT caches reach the trimmed steady state, so every timed round does the same work. Reported per arm
and N: the median wall seconds per step, the median process CPU seconds per step, and each arm's ratio to the
first arm (median of the per-repeat ratios: above 1 is cheaper than the first arm). Each arm's warm-up time is
reported too (for a compile arm, building its graph: the start-up cost); it is not in any step figure.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

# Arm name -> `DecodeOptions` keyword arguments (`before` is `DecodeOptions.before()`). Names only here: this
# module is imported to build the CLI, which must not import torch.
ARMS: dict[str, dict[str, Any]] = {
    "before": {"attention": "per-stream", "batched_source": False, "compile": False},
    "source": {},
    "ragged": {"attention": "ragged"},
    "compile": {"compile": True},
    "compile-ragged": {"compile": True, "attention": "ragged"},
    "compile-cudagraphs": {"compile": True, "compile_mode": "reduce-overhead"},
}
ARM_HELP = (
    "per-step cost table instead of the utterance table: each arm decodes the same batched streams in turn "
    "(before = the code before these options: per-stream NSF source, per-stream attention, eager; source = "
    "the batched NSF source; ragged = + one attention call over a batch's padded caches; compile = "
    "torch.compile of the DiT pass; compile-ragged = both; compile-cudagraphs = compile in mode "
    "reduce-overhead: CUDA graphs on a GPU, the graph without frozen weights on a CPU). The first arm is the "
    "ratios' yardstick"
)
LOOKAHEAD = 3
MEL_FRAMES_PER_CODE = 2
DIT_KEEP_TAIL = 100  # frames of the prompt the trimmed DiT cache keeps (docs/TOKEN2WAV.md §4.4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--arms` flags of `realtime bench token2wav`."""
    parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=None, help=ARM_HELP)
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="with --arms: numbers of streams whose steady windows are decoded as one batch",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="with --arms: timed rounds per arm and batch size (medians)"
    )


def run(
    args: argparse.Namespace,
    t2w: Any,
    voice: Any,
    prompt_codes: int,
    codes: Callable[[int], list[int]],
    header: dict[str, Any],
    log: Callable[[str], None],
) -> int:
    """Measure the arms of `args` and print the table (or JSON with `--json`)."""
    steps = measure_steps(
        t2w, voice, list(args.arms), args.batch_sizes, args.chunk, args.repeats, prompt_codes, codes, log
    )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    result = {"benchmark": "token2wav-steps", **header, "peak_rss_mb": round(peak_rss_mb, 1), "steps": steps}
    print(json.dumps(result, indent=2) if args.json else step_table(result))
    return 0


def steady_rounds(prompt_codes: int, hop: int) -> int:
    """Rounds of `hop` codes after which a stream's DiT cache is trimmed to its steady size, plus one."""
    prompt_frames = MEL_FRAMES_PER_CODE * prompt_codes
    return math.ceil((prompt_frames + DIT_KEEP_TAIL) / (MEL_FRAMES_PER_CODE * hop)) + 1


def measure_steps(
    t2w: Any,
    voice: Any,
    arms: list[str],
    batch_sizes: list[int],
    hop: int,
    repeats: int,
    prompt_codes: int,
    codes: Any,
    log: Any,
) -> dict[str, Any]:
    """Per-step cost of every arm at every batch size (see the module docstring); a JSON-able dict.

    Args:
        t2w: the `Token2Wav` (its options are switched between arms and left at the last one).
        voice: a primed voice.
        arms: names in `ARMS`; the first is the yardstick of the ratios.
        batch_sizes: numbers of streams decoded together.
        hop: steady hop in codes.
        repeats: timed rounds per arm and batch size.
        prompt_codes: the voice prompt's length in codes (sets how long the warm-up rounds run).
        codes: a callable `n -> list[int]` of random codes.
        log: progress printer.
    """
    from token2wav import ChunkSchedule
    from token2wav.options import DecodeOptions

    options = {name: DecodeOptions(**ARMS[name]) for name in arms}
    warmup_s: dict[str, float] = {}
    for name in arms:  # the first compile arm of each mode builds its graph here
        t2w.set_options(options[name])
        warmup_s[name] = round(t2w.warmup(voice), 2)
        log(f"{name}: warmed up in {warmup_s[name]} s")
    schedule = ChunkSchedule(first_hop_tokens=hop, hop_tokens=hop)
    table: dict[str, Any] = {}
    for n in batch_sizes:
        streams = [t2w.start(voice, schedule, seed=i) for i in range(n)]
        table[str(n)] = _batch_row(
            t2w, streams, options, arms, steady_rounds(prompt_codes, hop), repeats, codes
        )
        log(f"batch {n}: " + ", ".join(f"{arm} {table[str(n)][arm]['step_s']} s/step" for arm in arms))
    return {"arms": arms, "warmup_s": warmup_s, "hop": hop, "repeats": repeats, "batches": table}


def _batch_row(
    t2w: Any,
    streams: list[Any],
    options: dict[str, Any],
    arms: list[str],
    warm: int,
    repeats: int,
    codes: Any,
) -> dict[str, Any]:
    """One batch size: warm-up rounds to the steady state, then `repeats` rounds per arm, order rotating."""
    from token2wav.batch import StreamStep

    n = len(streams)
    rounds = 0

    def one_round(arm: str) -> tuple[float, float]:
        nonlocal rounds
        t2w.set_options(options[arm])
        steps = [StreamStep(s, codes(s.next_hop() + LOOKAHEAD - len(s.pending))) for s in streams]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        t2w.step_many(steps)
        _sync(t2w.device)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rounds += 1
        return wall / n, cpu / n

    for i in range(warm):  # until the caches are trimmed: every timed round then does the same work
        one_round(arms[i % len(arms)])
    walls: dict[str, list[float]] = {arm: [] for arm in arms}
    cpus: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(repeats):
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
            wall, cpu = one_round(arm)
            walls[arm].append(wall)
            cpus[arm].append(cpu)
    first = arms[0]
    row: dict[str, Any] = {"rounds": rounds}
    for arm in arms:
        row[arm] = {
            "step_s": round(statistics.median(walls[arm]), 4),
            "step_cpu_s": round(statistics.median(cpus[arm]), 4),
            f"cheaper_than_{first}": round(
                statistics.median(a / b for a, b in zip(walls[first], walls[arm], strict=True)), 3
            ),
            f"cpu_cheaper_than_{first}": round(
                statistics.median(a / b for a, b in zip(cpus[first], cpus[arm], strict=True)), 3
            ),
        }
    return row


def step_table(result: dict[str, Any]) -> str:
    """The per-step cost table as text."""
    steps = result["steps"]
    arms: list[str] = steps["arms"]
    first = arms[0]
    head = (
        f"token2wav per-step cost: size={result['size']} device={result['device']} dtype={result['dtype']} "
        f"threads={result['threads']} prompt={result['prompt_seconds']}s hop={steps['hop']} "
        f"repeats={steps['repeats']} (median; ratio = {first} / arm, per repeat, median)"
    )
    head += "\nwarm-up s per arm, in order (a compile arm's first includes building its graph): " + ", ".join(
        f"{arm} {seconds}" for arm, seconds in steps["warmup_s"].items()
    )
    lines = [head, "batch  arm              s/step  CPU s/step  cheaper  CPU cheaper"]
    for n, row in steps["batches"].items():
        for arm in arms:
            cell = row[arm]
            lines.append(
                f"{n:>5}  {arm:<15} {cell['step_s']:>7}  {cell['step_cpu_s']:>10}  "
                f"{cell[f'cheaper_than_{first}']:>7}  {cell[f'cpu_cheaper_than_{first}']:>11}"
            )
    return "\n".join(lines)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
