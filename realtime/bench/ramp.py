"""`realtime bench e2e --ramp`: the capacity each decoder policy really has, found by adding sessions.

For each arm (a server started with that arm's flags), the ramp runs `bench e2e` at growing session counts
(``--ramp-steps``, all sessions starting together, ``--responses`` each) and stops at the first step where an
admitted response underran (the simulated 1x player with its cushion ran dry), a response was refused
(``decoder_capacity_reached``) or failed. The capacity found is the last clean step: sessions, and the audio
seconds per second they were served. Arms:

* ``one-at-a-time``: ``--worker-batch 1 --no-realtime-admission`` (one stream per decode step);
* ``batched``: ``--no-realtime-admission`` (batched steps, memory slots only: every answer starts at once);
* ``admission``: the default (batched, and answers admitted by the measured real-time capacity: an answer past
  it waits in line up to ``--decoder-wait``, so the step fails on a refusal, not an underrun).

Without ``--spawn`` there is one arm, the server at ``--url``, as it is configured.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ARMS = {
    "one-at-a-time": "--worker-batch 1 --no-realtime-admission",
    "batched": "--no-realtime-admission",
    "admission": "",
}
DEFAULT_ARMS = ",".join(ARMS)
DEFAULT_STEPS = "1,2,4,6,8,10,12,14,16,20,24,28,32"


@dataclass(frozen=True)
class RampStep:
    """One session count of one arm."""

    sessions: int
    responses: int
    completed: int
    refused: int
    errors: int
    underruns: int
    stalled_s: float
    queue_p50_s: float | None
    ttfa_p50_s: float | None
    ttfa_p99_s: float | None
    audio_s_per_s: float

    @property
    def clean(self) -> bool:
        """Every response admitted, completed and played without an underrun."""
        return not (self.refused or self.errors or self.underruns) and self.completed == self.responses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ramp's flags (on `realtime bench e2e`)."""
    parser.add_argument(
        "--ramp",
        action="store_true",
        help="add sessions (--ramp-steps) until the first underrun or refusal and print the capacity found, "
        "for each --ramp-arms server (with --spawn) or the --url server",
    )
    parser.add_argument(
        "--ramp-steps", default=DEFAULT_STEPS, help="comma-separated session counts the ramp tries in order"
    )
    parser.add_argument(
        "--ramp-arms",
        default=DEFAULT_ARMS,
        help="comma-separated arms with --spawn: "
        + ", ".join(f"{name} ({flags or 'defaults'})" for name, flags in ARMS.items()),
    )


Measure = Callable[[argparse.Namespace], dict[str, Any]]
"""Runs one `bench e2e` step with these arguments and returns its report (`realtime.bench.e2e.summarise`)."""
Spawn = Callable[[str], tuple["subprocess.Popen[bytes]", str]]
"""Starts a server with these extra flags; returns the process and its Realtime URL."""


def run_ramp(args: argparse.Namespace, measure: Measure, spawn: Spawn) -> int:
    """Ramp every arm; print a table per arm and the capacities; exit 0 (a ramp ends where it fails)."""
    try:
        steps = [int(step) for step in args.ramp_steps.split(",") if step.strip()]
    except ValueError:
        print("--ramp-steps takes comma-separated integers", file=sys.stderr)
        return 2
    arms = [arm.strip() for arm in args.ramp_arms.split(",") if arm.strip()] if args.spawn else ["server"]
    unknown = [arm for arm in arms if args.spawn and arm not in ARMS]
    if unknown or not steps or min(steps) < 1:
        print(f"unknown arms {unknown} or bad steps {steps}", file=sys.stderr)
        return 2
    found: dict[str, list[RampStep]] = {}
    for arm in arms:
        proc = None
        rows: list[RampStep] = []
        try:
            if args.spawn:
                proc, args.url = spawn(f"{args.server_args} {ARMS[arm]}")
            for sessions in steps:
                step_args = copy.copy(args)
                step_args.sessions = sessions
                row = _row(measure(step_args))
                rows.append(row)
                print(f"[{arm}] {_format_row(row)}", file=sys.stderr)
                if not row.clean:
                    break
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        found[arm] = rows
    report = {arm: _capacity(rows) for arm, rows in found.items()}
    if args.json:
        print(
            json.dumps(
                {"capacity": report, "steps": {a: [r.__dict__ for r in rs] for a, rs in found.items()}}
            )
        )
    else:
        print(_format(found, report))
    return 0


def _row(report: dict[str, Any]) -> RampStep:
    return RampStep(
        sessions=report["sessions"],
        responses=report["responses"],
        completed=report["completed"],
        refused=report["refused"],
        errors=report["errors"],
        underruns=report["underruns_total"],
        stalled_s=report["underrun_s_total"],
        queue_p50_s=report["queue_s"]["p50"],
        ttfa_p50_s=report["ttfa_s"]["p50"],
        ttfa_p99_s=report["ttfa_s"]["p99"],
        audio_s_per_s=report["throughput_audio_s_per_s"],
    )


def _capacity(rows: list[RampStep]) -> dict[str, Any]:
    clean = [row for row in rows if row.clean]
    last = clean[-1] if clean else None
    stopped = next((row for row in rows if not row.clean), None)
    return {
        "sessions": last.sessions if last else 0,
        "audio_s_per_s": last.audio_s_per_s if last else 0.0,
        "stopped_at": None if stopped is None else stopped.sessions,
        "stopped_by": None if stopped is None else _why(stopped),
    }


def _why(row: RampStep) -> str:
    parts = []
    if row.underruns:
        parts.append(f"{row.underruns} underruns")
    if row.refused:
        parts.append(f"{row.refused} refused")
    if row.errors or row.completed + row.refused < row.responses:
        parts.append(f"{row.errors} errors")
    return ", ".join(parts) or "incomplete"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _format_row(row: RampStep) -> str:
    return (
        f"{row.sessions:>4} sessions: {row.completed}/{row.responses} completed, {row.refused} refused, "
        f"{row.errors} errors, {row.underruns} underruns ({row.stalled_s:.1f} s stalled), queue p50 "
        f"{_ms(row.queue_p50_s)} ms, TTFA p50/p99 {_ms(row.ttfa_p50_s)}/{_ms(row.ttfa_p99_s)} ms, "
        f"{row.audio_s_per_s:.1f} audio s/s"
    )


def _format(found: dict[str, list[RampStep]], capacity: dict[str, dict[str, Any]]) -> str:
    lines = []
    for arm, rows in found.items():
        lines.append(f"ramp: {arm}")
        lines += [f"  {_format_row(row)}" for row in rows]
    lines.append("capacity found (last step with every response admitted and no underrun):")
    for arm, figures in capacity.items():
        stop = (
            f"stopped at {figures['stopped_at']} sessions by {figures['stopped_by']}"
            if figures["stopped_at"] is not None
            else "never stopped (raise --ramp-steps)"
        )
        lines.append(
            f"  {arm:<14} {figures['sessions']:>3} sessions, {figures['audio_s_per_s']:.1f} audio s/s; {stop}"
        )
    return "\n".join(lines)
