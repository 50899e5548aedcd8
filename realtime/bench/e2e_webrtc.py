"""The WebRTC arm of `realtime bench e2e --transport webrtc`: what a caller hears, measured at the caller.

Each session is a call placed like a browser places it (realtime/bench/webrtc_client.py: Opus microphone,
``oai-events`` data channel, an offer without candidates), with push-to-talk turns (``turn_detection: null``):
the user turn is text on the channel, or the ``--wav`` spoken into the microphone in real time and committed.
Per response, timed from the moment ``response.create`` is sent:

- ``ttfa_heard_s``: the first non-silent 20 ms frame decoded from the server's Opus track (the server's
  pacing, Opus both ways, the network and aiortc's receiver included; a browser's jitter buffer adds its own
  tens of ms on top);
- ``ttfa_event_s``: ``output_audio_buffer.started`` on the data channel (the server queued the first audio);
- ``jitter_ms``: RFC 3550's interarrival jitter of the decoded frames while the response played;
- underruns: runs of silent frames between the response's first and last audible frame (the server's track
  had nothing to play: the decoder fell behind real time), and the seconds they lasted. Speech has quiet
  stretches too, so on a real voice this is an upper bound; the embedded random-weight decoder is never
  silent mid-reply.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from realtime.bench.runs import percentiles, run_staggered
from realtime.bench.webrtc_client import SILENT_PEAK, CallClient, HeardFrame

FRAME_S = 0.020
COMMIT_TAIL_MS = 300  # silence after spoken input, so its last frames have arrived before the commit
JITTER_GAIN = 16  # RFC 3550 section 6.4.1
QUIET_BEFORE_MS = 200  # silence heard before a response is timed


@dataclass
class CallSample:
    """Figures of one response heard over a call, times in seconds from ``response.create``."""

    session: int
    index: int
    status: str = "unknown"
    ttfa_heard_s: float | None = None
    ttfa_event_s: float | None = None
    wall_s: float = 0.0
    audio_s: float = 0.0
    jitter_ms: float = 0.0
    underruns: int = 0
    underrun_s: float = 0.0
    error: str | None = None


def http_base(url: str) -> str:
    """``ws://host:port/v1/realtime?...`` -> ``http://host:port`` (``wss`` -> ``https``)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    return f"{scheme}://{parts.netloc}"


def analyse(frames: list[HeardFrame], start: float) -> tuple[float | None, float, float, int, float]:
    """First audible frame (s after ``start``), audible seconds, jitter (ms), underruns and their seconds."""
    heard = [i for i, frame in enumerate(frames) if frame.peak >= SILENT_PEAK]
    if not heard:
        return None, 0.0, 0.0, 0, 0.0
    first, last = heard[0], heard[-1]
    playing = frames[first : last + 1]
    jitter = 0.0
    for before, after in itertools.pairwise(playing):
        deviation = abs((after.at - before.at) - FRAME_S)
        jitter += (deviation - jitter) / JITTER_GAIN
    runs, silent, in_gap = 0, 0, False
    for frame in playing:
        quiet = frame.peak < SILENT_PEAK
        runs += quiet and not in_gap
        silent += quiet
        in_gap = quiet
    return frames[first].at - start, len(heard) * FRAME_S, jitter * 1000, runs, silent * FRAME_S


class _Caller:
    def __init__(self, args: argparse.Namespace, index: int, input_pcm: bytes | None) -> None:
        self.args = args
        self.index = index
        self.input_pcm = input_pcm

    async def run(self) -> list[CallSample]:
        args = self.args
        key = args.api_key or None
        client = await CallClient.connect(http_base(args.url), api_key=key, wait_s=args.timeout)
        try:
            await asyncio.wait_for(client.until("session.created"), args.timeout)
            session: dict[str, Any] = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
            if args.instructions:
                session["instructions"] = args.instructions
            client.send({"type": "session.update", "session": session})
            await asyncio.wait_for(client.until("session.updated"), args.timeout)
            return [await self._one_response(client, index) for index in range(args.responses)]
        finally:
            await client.close()

    async def _one_response(self, client: CallClient, index: int) -> CallSample:
        sample = CallSample(session=self.index, index=index)
        if self.input_pcm is not None:
            await client.speak(self.input_pcm + bytes(COMMIT_TAIL_MS * 48))
            await client.spoken()
            client.send({"type": "input_audio_buffer.commit"})
        else:
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": self.args.text}],
            }
            client.send({"type": "conversation.item.create", "item": item})
        await client.until_quiet(QUIET_BEFORE_MS)  # the previous answer's last frames have all arrived
        first_frame = len(client.frames)
        start = time.perf_counter()
        client.send({"type": "response.create"})
        try:
            async with asyncio.timeout(self.args.timeout):
                while True:
                    event = await client.recv()
                    kind = event.get("type")
                    if kind == "output_audio_buffer.started" and sample.ttfa_event_s is None:
                        sample.ttfa_event_s = time.perf_counter() - start
                    elif kind == "error":
                        sample.error = str(event.get("error"))[:300]
                    elif kind == "response.done":
                        sample.status = event["response"]["status"]
                        sample.wall_s = time.perf_counter() - start
                        if sample.ttfa_event_s is None:  # nothing to play: no stopped will come
                            break
                    elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                        break
        except TimeoutError:
            sample.status, sample.error = "timeout", f"no event for {self.args.timeout} s"
        await asyncio.sleep(0.1)  # the last frames cross the network and the decoder
        figures = analyse(client.frames[first_frame:], start)
        sample.ttfa_heard_s, sample.audio_s, sample.jitter_ms, sample.underruns, sample.underrun_s = figures
        return sample


async def run_calls(
    args: argparse.Namespace, input_pcm: bytes | None
) -> tuple[list[CallSample], list[str], float]:
    """Run ``args.sessions`` calls of ``args.responses`` responses (staggered as the WebSocket arm)."""
    callers = [_Caller(args, i, input_pcm) for i in range(args.sessions)]
    return await run_staggered([caller.run for caller in callers], args.stagger_ms)


def summarise_calls(samples: list[CallSample], failures: list[str], elapsed: float) -> dict[str, Any]:
    """The WebRTC arm's part of the JSON report."""
    ok = [s for s in samples if s.error is None and s.status in {"completed", "incomplete"}]
    errors = [s.error for s in samples if s.error] + failures
    return {
        "responses": len(samples),
        "completed": len(ok),
        "errors": len(errors),
        "error_messages": errors[:20],
        "ttfa_heard_s": percentiles([s.ttfa_heard_s for s in ok if s.ttfa_heard_s is not None]),
        "ttfa_event_s": percentiles([s.ttfa_event_s for s in ok if s.ttfa_event_s is not None]),
        "jitter_ms": percentiles([s.jitter_ms for s in ok if s.audio_s > 0]),
        "audio_s_per_response": percentiles([s.audio_s for s in ok]),
        "underruns_total": sum(s.underruns for s in ok),
        "underrun_s_total": sum(s.underrun_s for s in ok),
        "responses_with_underrun": sum(1 for s in ok if s.underruns),
        "wall_s": elapsed,
    }


def format_calls(report: dict[str, Any]) -> list[str]:
    """The WebRTC arm's lines of the table."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    lines = ["WebRTC arm (same server, same run; figures at the caller):"]
    for key, label in (
        ("ttfa_heard_s", "first audio heard"),
        ("ttfa_event_s", "output_audio_buffer.started"),
    ):
        p = report[key]
        lines.append(f"  {label:<28}{ms(p['p50']):>12}{ms(p['p90']):>12}{ms(p['p99']):>12}")
    jitter = report["jitter_ms"]
    shown = "-" if jitter["p50"] is None else f"{jitter['p50']:.1f} / {jitter['p99']:.1f} ms"
    lines += [
        f"  jitter p50/p99 {shown}, underruns {report['underruns_total']} in "
        f"{report['responses_with_underrun']} responses ({report['underrun_s_total'] * 1000:.0f} ms silent), "
        f"completed {report['completed']}/{report['responses']}, errors {report['errors']}",
    ]
    return lines + [f"  error: {m}" for m in report["error_messages"][:5]]
