"""`realtime bench e2e`: what a user of any OpenAI Realtime server feels, measured the same way every time.

N concurrent clients each run M responses over raw WebSockets (no SDK in the timing path): a user turn (text,
or a wav sent as input audio), `response.create`, then every event until `response.done`. Clients start
together or `--stagger-ms` apart. Per response it records its queue time (`response.create` to
`response.created`: a server that admits answers by decoder capacity makes a response wait there), time to first
audio delta (and that time minus the queue time), time to first transcript delta, audio seconds, real-time
factor (audio seconds / wall seconds) and the underruns (count and stalled time) a player with a fixed start-up
cushion would have had at 1x speed; a response refused with ``decoder_capacity_reached`` counts as a refusal,
not an error. `--ramp` (realtime/bench/ramp.py) adds sessions until the first underrun or refusal. The report adds the aggregate audio
seconds produced per wall second and, against our server, the histogram of the inference worker's batch sizes
during the run (scraped from `/metrics`). Works against any Realtime server; `--spawn` starts ours.

``--transport webrtc`` runs, after this WebSocket arm and against the same server, the same sessions as WebRTC
calls (realtime/bench/e2e_webrtc.py: first audio as heard at the caller, jitter, underruns), so the two arms
are compared within one run.

Size: over 400 lines: a self-contained benchmark (clients, timing, report, plot).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realtime.bench import ramp
from realtime.bench.e2e_webrtc import format_calls, run_calls, summarise_calls
from realtime.bench.runs import percentiles, run_staggered
from realtime.bench.server_metrics import batch_histogram, metrics_url, scrape_batch_buckets

OUTPUT_RATE = 24_000
BYTES_PER_SAMPLE = 2
INPUT_CHUNK_MS = 100
SPAWN_TIMEOUT_S = 300.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
DEFAULT_PROMPT = "Tell me something nice about the sea."
DECODER_CAPACITY = "decoder_capacity_reached"

HELP = "end-to-end latency of concurrent Realtime sessions against a running (or spawned) server"
DESCRIPTION = __doc__ or HELP


@dataclass
class ResponseSample:
    """Figures of one response, times in seconds from the moment `response.create` was sent."""

    session: int
    index: int
    status: str = "unknown"
    queue_s: float | None = None  # response.create -> response.created
    refused: bool = False  # decoder_capacity_reached instead of the response
    ttfa_s: float | None = None
    ttft_s: float | None = None
    wall_s: float = 0.0
    audio_s: float = 0.0
    rtf: float = 0.0
    underruns: int = 0
    underrun_s: float = 0.0
    error: str | None = None
    # (arrival time, audio seconds received so far) per delta, for the audio-ahead curve
    arrivals: list[tuple[float, float]] = field(default_factory=list)


def simulate_player(arrivals: list[tuple[float, float]], cushion_s: float) -> tuple[int, float]:
    """Count underruns of a 1x player that starts `cushion_s` after the first delta and stalls when dry.

    Args:
        arrivals: (arrival time, cumulative audio seconds *after* this delta) per delta, in arrival order.
        cushion_s: start-up buffering of the player.

    Returns:
        (number of underruns, total seconds of silence they caused).
    """
    if not arrivals:
        return 0, 0.0
    play_start = arrivals[0][0] + cushion_s
    stall = 0.0
    count = 0
    before = 0.0  # audio seconds received before the current delta
    for arrival, after in arrivals:
        needed_at = play_start + before + stall
        if arrival > needed_at + 1e-9:
            count += 1
            stall += arrival - needed_at
        before = after
    return count, stall


def _load_wav_pcm16_24k(path: Path) -> bytes:
    import numpy as np
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != OUTPUT_RATE:  # linear interpolation is plenty for a benchmark input
        n_out = round(len(mono) * OUTPUT_RATE / rate)
        mono = np.interp(np.linspace(0, len(mono) - 1, n_out), np.arange(len(mono)), mono)
    pcm = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2")
    return bytes(pcm.tobytes())


class _Client:
    """One Realtime session driven over raw WebSockets."""

    def __init__(self, args: argparse.Namespace, session_index: int, input_pcm: bytes | None) -> None:
        self.args = args
        self.session_index = session_index
        self.input_pcm = input_pcm
        self.beta = args.dialect == "beta"

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.args.api_key}"}
        if self.beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        return headers

    def _session_update(self) -> dict[str, Any]:
        modalities = ["text"] if self.args.modalities == "text" else ["audio"]
        if self.beta:
            session: dict[str, Any] = {
                "modalities": ["text", *modalities] if modalities == ["audio"] else modalities,
                "turn_detection": None,
            }
        else:
            session = {
                "type": "realtime",
                "output_modalities": modalities,
                "audio": {"input": {"turn_detection": None}},
            }
        if self.args.instructions:
            session["instructions"] = self.args.instructions
        if self.args.transcribe:
            transcription = {"model": self.args.transcribe}
            if self.beta:
                session["input_audio_transcription"] = transcription
            else:
                session["audio"]["input"]["transcription"] = transcription
        return {"type": "session.update", "session": session}

    async def run(self) -> list[ResponseSample]:
        from websockets.asyncio.client import connect

        samples: list[ResponseSample] = []
        async with connect(
            self.args.url,
            additional_headers=self._headers(),
            max_size=MAX_FRAME_BYTES,
            open_timeout=self.args.timeout,
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), self.args.timeout))
            if first.get("type") != "session.created":
                raise RuntimeError(f"expected session.created, got {first.get('type')}")
            await ws.send(json.dumps(self._session_update()))
            for index in range(self.args.responses):
                samples.append(await self._one_response(ws, index))
        return samples

    async def _send_turn(self, ws: Any) -> None:
        if self.input_pcm is not None:
            step = OUTPUT_RATE * BYTES_PER_SAMPLE * INPUT_CHUNK_MS // 1000
            for start in range(0, len(self.input_pcm), step):
                chunk = base64.b64encode(self.input_pcm[start : start + step]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        else:
            content_type = "input_text"
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": content_type, "text": self.args.text}],
            }
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))

    async def _one_response(self, ws: Any, index: int) -> ResponseSample:
        sample = ResponseSample(session=self.session_index, index=index)
        await self._send_turn(ws)
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create"}))
        received_samples = 0
        audio_types = {"response.output_audio.delta", "response.audio.delta"}
        transcript_types = {
            "response.output_audio_transcript.delta",
            "response.audio_transcript.delta",
            "response.output_text.delta",
            "response.text.delta",
        }
        try:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), self.args.timeout))
                now = time.perf_counter() - start
                kind = event.get("type")
                if kind in audio_types:
                    received_samples += len(base64.b64decode(event["delta"])) // BYTES_PER_SAMPLE
                    sample.ttfa_s = now if sample.ttfa_s is None else sample.ttfa_s
                    sample.arrivals.append((now, received_samples / OUTPUT_RATE))
                elif kind in transcript_types:
                    sample.ttft_s = now if sample.ttft_s is None else sample.ttft_s
                elif kind == "response.created":
                    sample.queue_s = now if sample.queue_s is None else sample.queue_s
                elif kind == "error" and (event.get("error") or {}).get("code") == DECODER_CAPACITY:
                    sample.refused, sample.status, sample.wall_s = True, "refused", now
                    break  # no response was started: nothing more comes for it
                elif kind == "error":
                    sample.error = json.dumps(event.get("error"))[:300]
                elif kind == "response.done":
                    sample.status = event.get("response", {}).get("status", "unknown")
                    if sample.status == "failed" and sample.error is None:
                        sample.error = json.dumps(event["response"].get("status_details"))[:300]
                    sample.wall_s = now
                    break
        except TimeoutError:
            sample.status = "timeout"
            sample.error = f"no event for {self.args.timeout} s"
            sample.wall_s = time.perf_counter() - start
        sample.audio_s = received_samples / OUTPUT_RATE
        sample.rtf = sample.audio_s / sample.wall_s if sample.wall_s > 0 else 0.0
        sample.underruns, sample.underrun_s = simulate_player(sample.arrivals, self.args.cushion_ms / 1000)
        return sample


async def _run_all(
    args: argparse.Namespace, input_pcm: bytes | None
) -> tuple[list[ResponseSample], list[str], float]:
    clients = [_Client(args, i, input_pcm) for i in range(args.sessions)]
    return await run_staggered([client.run for client in clients], args.stagger_ms)


def summarise(
    samples: list[ResponseSample], failures: list[str], elapsed: float, args: argparse.Namespace
) -> dict[str, Any]:
    """The JSON report: configuration, percentiles, throughput and errors."""
    ok = [s for s in samples if s.error is None and s.status in {"completed", "incomplete"}]
    total_audio = sum(s.audio_s for s in samples)
    errors = [s.error for s in samples if s.error] + failures
    after_queue = [s.ttfa_s - (s.queue_s or 0.0) for s in ok if s.ttfa_s is not None]
    return {
        "url": args.url,
        "sessions": args.sessions,
        "responses_per_session": args.responses,
        "stagger_ms": args.stagger_ms,
        "input": "wav" if args.wav else "text",
        "dialect": args.dialect,
        "responses": len(samples),
        "completed": len(ok),
        "refused": sum(1 for s in samples if s.refused),
        "errors": len(errors),
        "error_messages": errors[:20],
        "ttfa_s": percentiles([s.ttfa_s for s in ok if s.ttfa_s is not None]),
        "queue_s": percentiles([s.queue_s for s in ok if s.queue_s is not None]),
        "ttfa_after_queue_s": percentiles(after_queue),
        "ttft_s": percentiles([s.ttft_s for s in ok if s.ttft_s is not None]),
        "rtf": percentiles([s.rtf for s in ok if s.audio_s > 0]),
        "audio_s_per_response": percentiles([s.audio_s for s in ok]),
        "underruns_total": sum(s.underruns for s in ok),
        "underrun_s_total": sum(s.underrun_s for s in ok),
        "responses_with_underrun": sum(1 for s in ok if s.underruns),
        "underruns_per_response": percentiles([float(s.underruns) for s in ok]),
        "underrun_s_per_response": percentiles([s.underrun_s for s in ok]),
        "cushion_ms": args.cushion_ms,
        "wall_s": elapsed,
        "throughput_audio_s_per_s": total_audio / elapsed if elapsed > 0 else 0.0,
        "throughput_responses_per_s": len(samples) / elapsed if elapsed > 0 else 0.0,
    }


def _format_table(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"e2e bench: {report['sessions']} sessions x {report['responses_per_session']} responses "
        f"against {report['url']} ({report['dialect']}, {report['input']} input)",
        f"{'metric':<28}{'p50':>12}{'p90':>12}{'p99':>12}",
    ]
    for key, label, fmt in (
        ("queue_s", "queue time (to created)", ms),
        ("ttfa_s", "time to first audio", ms),
        ("ttfa_after_queue_s", "  minus queue time", ms),
        ("ttft_s", "time to first transcript", ms),
        ("rtf", "real-time factor (x)", num),
        ("audio_s_per_response", "audio per response (s)", num),
    ):
        p = report[key]
        lines.append(f"{label:<28}{fmt(p['p50']):>12}{fmt(p['p90']):>12}{fmt(p['p99']):>12}")
    lines += [
        f"completed {report['completed']}/{report['responses']}, refused {report['refused']} "
        f"(decoder_capacity_reached), errors {report['errors']}, "
        f"underruns {report['underruns_total']} in {report['responses_with_underrun']} responses, "
        f"{report['underrun_s_total'] * 1000:.0f} ms stalled in all, per response p50/p99 "
        f"{ms(report['underrun_s_per_response']['p50'])}/{ms(report['underrun_s_per_response']['p99'])} "
        f"(player cushion {report['cushion_ms']} ms)",
        f"throughput: {report['throughput_audio_s_per_s']:.2f} s of audio per s, "
        f"{report['throughput_responses_per_s']:.2f} responses per s, wall {report['wall_s']:.1f} s",
    ]
    if report.get("worker_batch_sizes") is not None:
        sizes = ", ".join(f"{k}: {v}" for k, v in report["worker_batch_sizes"].items()) or "none"
        lines.append(f"worker batches by size: {sizes}")
    lines += [f"error: {m}" for m in report["error_messages"][:5]]
    return "\n".join(lines)


def _plot(samples: list[ResponseSample], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    ttfa = [s.ttfa_s * 1000 for s in samples if s.ttfa_s is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(ttfa, bins=min(30, max(5, len(ttfa) // 2)))
    ax.set_xlabel("time to first audio (ms)")
    ax.set_ylabel("responses")
    fig.tight_layout()
    fig.savefig(out_dir / "ttfa_hist.png", dpi=100)
    written.append(str(out_dir / "ttfa_hist.png"))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in samples[:50]:
        if s.arrivals:
            first = s.arrivals[0][0]
            ax.plot([t for t, _ in s.arrivals], [a - max(0.0, t - first) for t, a in s.arrivals], lw=0.8)
    ax.set_xlabel("seconds since response.create")
    ax.set_ylabel("audio ahead of 1x playback (s)")
    fig.tight_layout()
    fig.savefig(out_dir / "audio_ahead.png", dpi=100)
    written.append(str(out_dir / "audio_ahead.png"))
    plt.close("all")
    return written


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn_server(server_args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "realtime",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *shlex.split(server_args),
    ]
    print(f"spawning: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=sys.stderr, stderr=sys.stderr, env=dict(os.environ))
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spawned server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, f"ws://127.0.0.1:{port}/v1/realtime?model=step-audio-2-mini"
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"spawned server not healthy after {SPAWN_TIMEOUT_S} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench e2e`."""
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8000/v1/realtime?model=step-audio-2-mini",
        help="Realtime WebSocket URL of the server under test",
    )
    parser.add_argument("--spawn", action="store_true", help="start our own server on a free port first")
    parser.add_argument("--server-args", default="", help="extra `realtime serve` flags with --spawn")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--responses", type=int, default=5, help="responses per session, one after another")
    parser.add_argument(
        "--stagger-ms",
        type=float,
        default=0.0,
        help="start session i after i x this many ms (0: all sessions start at once)",
    )
    parser.add_argument("--text", default=DEFAULT_PROMPT, help="the user turn, as text")
    parser.add_argument("--wav", type=Path, default=None, help="send this wav as input audio instead of text")
    parser.add_argument("--instructions", default="", help="session instructions")
    parser.add_argument(
        "--transcribe",
        default=None,
        metavar="MODEL",
        help="turn input audio transcription on with this model name (with --wav: compare TTFA with and without)",
    )
    parser.add_argument("--modalities", choices=["audio", "text"], default="audio", help="output modality")
    parser.add_argument("--dialect", choices=["ga", "beta"], default="ga", help="protocol dialect")
    parser.add_argument(
        "--transport",
        choices=["websocket", "webrtc"],
        default="websocket",
        help="webrtc: after the WebSocket arm, run the same sessions as WebRTC calls placed like a browser "
        "(GA; first audio heard at the caller, jitter, underruns) and report both arms",
    )
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-local"), help="bearer key")
    parser.add_argument(
        "--cushion-ms", type=float, default=100.0, help="start-up cushion of the simulated player"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for any one event")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the JSON report (with samples) here"
    )
    parser.add_argument("--plot", type=Path, default=None, help="write PNG plots into this folder")
    ramp.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; exit code 1 when any response failed."""
    if args.sessions < 1 or args.responses < 1:
        print("--sessions and --responses must be at least 1", file=sys.stderr)
        return 2
    if args.stagger_ms < 0:
        print("--stagger-ms must be >= 0", file=sys.stderr)
        return 2
    input_pcm = _load_wav_pcm16_24k(args.wav) if args.wav else None
    if args.ramp:

        def measure(step: argparse.Namespace) -> dict[str, Any]:
            samples, failures, elapsed = asyncio.run(_run_all(step, input_pcm))
            return summarise(samples, failures, elapsed, step)

        return ramp.run_ramp(args, measure, _spawn_server)
    proc = None
    try:
        if args.spawn:
            proc, args.url = _spawn_server(args.server_args)
        print(f"running {args.sessions} x {args.responses} responses against {args.url}", file=sys.stderr)
        scrape = metrics_url(args.url)
        before = scrape_batch_buckets(scrape)
        samples, failures, elapsed = asyncio.run(_run_all(args, input_pcm))
        after = scrape_batch_buckets(scrape)
        calls = asyncio.run(run_calls(args, input_pcm)) if args.transport == "webrtc" else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    report = summarise(samples, failures, elapsed, args)
    report["worker_batch_sizes"] = batch_histogram(before, after)
    if calls is not None:
        report["webrtc"] = summarise_calls(*calls)
        report["errors"] += report["webrtc"]["errors"]
    if args.plot:
        report["plots"] = _plot(samples, args.plot)
    if args.out:
        details = {"samples": [asdict(s) for s in samples]}
        if calls is not None:
            details["webrtc_samples"] = [asdict(s) for s in calls[0]]
        args.out.write_text(json.dumps({**report, **details}, indent=2))
    table = (
        "\n".join([_format_table(report), *format_calls(report["webrtc"])])
        if calls
        else _format_table(report)
    )
    print(json.dumps(report) if args.json else table)
    return 1 if report["errors"] else 0
