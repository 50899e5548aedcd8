"""`realtime bench parser`: how many output ids per second `AudioTokenParser` classifies on this machine.

The workload is a realistic spoken reply: TA4 groups (1 text slot + 4 audio slots) whose text runs out part
way (``--text-fraction``; afterwards the text slot carries ``<tts_pad>``), the last group padded with
``<audio_6561>``, then ``<tts_end>``, a tool call as content text and ``<|EOT|>``. It is fed in chunks of
``--chunk`` ids, as a backend delivers them, and flushed; every round builds a fresh parser per reply.

Reported: the median and best of ``--rounds`` timed rounds (after a warm-up round), by default in ids per
CPU-second of this process (``--clock cpu``, so other load on a shared machine does not count against the
parser; ``--clock wall`` for wall-clock time), for the main chunk size and a few others, next to a same-run
baseline (a bare Python loop that only compares each id with the audio range: the floor any pure-Python
classifier pays) and next to the LLM's decode rate (about 32 ids per second of speech, docs/SGLANG.md §2.2),
to show how many real-time streams one core could parse.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from streaming_parser import AudioTokenParser, VocabLayout
from streaming_parser.ta4 import AUDIO_PER_GROUP, spoken_reply

HELP = "throughput of the audio-token parser in ids per second"
DESCRIPTION = __doc__ or HELP

LLM_IDS_PER_SPEECH_SECOND = 32  # 25 audio codes + ~6.25 text slots per second of speech
TOOL_CALL_IDS = 24  # content text after <tts_end>
EXTRA_CHUNK_SIZES = (1, 5, 1000)  # also reported, besides --chunk
SEED = 20250


def build_reply(layout: VocabLayout, groups: int, text_fraction: float, seed: int = SEED) -> list[int]:
    """One spoken reply of ``groups`` TA4 groups, text in the first ``text_fraction`` of them."""
    rng = random.Random(seed)
    text_ids = [rng.randrange(layout.pure_text_limit) for _ in range(round(groups * text_fraction))]
    codes = [rng.randrange(layout.audio_codes) for _ in range(groups * AUDIO_PER_GROUP - 2)]
    tool_call = [rng.randrange(layout.pure_text_limit) for _ in range(TOOL_CALL_IDS)]
    return spoken_reply(layout, text_ids, codes, after_text_ids=tool_call)


def _chunks(ids: Sequence[int], size: int) -> list[Sequence[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def parse_reply(layout: VocabLayout, chunks: Sequence[Sequence[int]]) -> int:
    """Parse one reply chunk by chunk; return the number of events (so the work cannot be skipped)."""
    parser = AudioTokenParser(layout, starts_in_speech=True)
    count = 0
    for chunk in chunks:
        count += len(parser.feed(chunk))
    return count + len(parser.flush())


def baseline_loop(layout: VocabLayout, chunks: Sequence[Sequence[int]]) -> int:
    """The floor: visit each id once and compare it with the audio range, nothing else."""
    first, pad = layout.audio_first, layout.audio_pad
    count = 0
    for chunk in chunks:
        for token_id in chunk:
            if first <= token_id < pad:
                count += 1
    return count


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def measure(
    work: Callable[[], object], ids_per_call: int, rounds: int, min_time: float, clock: Callable[[], float]
) -> list[float]:
    """Ids per second of ``rounds`` timed rounds, each repeating ``work`` for at least ``min_time`` s."""
    work()  # warm-up: first-call costs, allocator
    rates = []
    for _ in range(rounds):
        calls = 0
        start = clock()
        elapsed = 0.0
        while calls == 0 or elapsed < min_time:
            work()
            calls += 1
            elapsed = clock() - start
        rates.append(calls * ids_per_call / elapsed)
    return rates


def _machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "python": platform.python_version(), "commit": commit or "unknown"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench parser`."""
    parser.add_argument("--groups", type=int, default=750, help="TA4 groups per reply (750 = 30 s of speech)")
    parser.add_argument(
        "--text-fraction", type=float, default=0.5, help="share of groups whose text slot carries text"
    )
    parser.add_argument("--chunk", type=int, default=100, help="ids per feed() call for the headline figure")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is reported")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per timed round")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: ids per CPU-second of this process (robust to other load on a shared machine); "
        "wall: ids per wall-clock second",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the result."""
    if args.groups < 1 or args.chunk < 1 or args.rounds < 1 or not 0.0 <= args.text_fraction <= 1.0:
        print("--groups, --chunk and --rounds must be >= 1 and --text-fraction in [0, 1]", file=sys.stderr)
        return 2
    clock = CLOCKS[args.clock]
    layout = VocabLayout.default()
    reply = build_reply(layout, args.groups, args.text_fraction)
    print(
        f"reply: {len(reply)} ids ({args.groups} TA4 groups, text in {args.text_fraction:.0%})",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []
    for size in (args.chunk, *(s for s in EXTRA_CHUNK_SIZES if s != args.chunk)):
        chunks = _chunks(reply, size)
        print(f"measuring chunk size {size} ...", file=sys.stderr)
        rates = measure(partial(parse_reply, layout, chunks), len(reply), args.rounds, args.min_time, clock)
        rows.append({"chunk": size, "median": statistics.median(rates), "best": max(rates)})
    print("measuring the bare-loop baseline ...", file=sys.stderr)
    base_chunks = _chunks(reply, args.chunk)
    baseline = measure(
        partial(baseline_loop, layout, base_chunks), len(reply), args.rounds, args.min_time, clock
    )
    headline = rows[0]["median"]
    report: dict[str, Any] = {
        "ids_per_second": headline,
        "ids_per_second_best": rows[0]["best"],
        "clock": args.clock,
        "chunk": args.chunk,
        "reply_ids": len(reply),
        "groups": args.groups,
        "text_fraction": args.text_fraction,
        "rounds": args.rounds,
        "by_chunk": rows,
        "baseline_loop_ids_per_second": statistics.median(baseline),
        "realtime_streams_per_core": headline / LLM_IDS_PER_SPEECH_SECOND,
        **_machine(),
    }
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def format_table(report: dict[str, Any]) -> str:
    """A readable summary of a report."""
    lines = [
        f"parser throughput on {report['cpu']} (Python {report['python']}, commit {report['commit']})",
        f"reply: {report['reply_ids']} ids, {report['groups']} TA4 groups, text in {report['text_fraction']:.0%}",
        "",
        f"clock: {report['clock']} ({'per CPU-second of this process' if report['clock'] == 'cpu' else 'wall'})",
        f"{'chunk (ids/feed)':>18}  {'median ids/s':>14}  {'best ids/s':>14}",
    ]
    for row in report["by_chunk"]:
        lines.append(f"{row['chunk']:>18}  {row['median']:>14,.0f}  {row['best']:>14,.0f}")
    lines += [
        "",
        f"headline (chunk {report['chunk']}): {report['ids_per_second']:,.0f} ids/s",
        f"bare-loop baseline:     {report['baseline_loop_ids_per_second']:,.0f} ids/s",
        f"real-time streams per core at {LLM_IDS_PER_SPEECH_SECOND} ids/s: "
        f"{report['realtime_streams_per_core']:,.0f}",
    ]
    return "\n".join(lines)
