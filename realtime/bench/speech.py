"""`realtime bench speech`: concurrent ``POST /v1/audio/speech`` streams, as an HTTP TTS client feels them.

For each concurrency level N, N clients each send ``--requests`` speech requests one after another over raw
HTTP (httpx, no SDK in the timing path) and read the streamed body. Per request it records the time to first
byte (request sent -> first body byte), the wall time, the seconds of audio received (the body decoded after
the timing) and the real-time factor (audio seconds / wall seconds). With ``--realtime`` the same run also
measures the Realtime WebSocket path at the same concurrency (`realtime.bench.e2e` clients, text turn), so time
to first byte sits beside the Realtime time to first audio measured on the same server in the same minute.
`--spawn` starts our server (``realtime serve`` plus ``--server-args``); otherwise ``--url`` is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from realtime.bench.e2e import _run_all, _spawn_server
from realtime.bench.e2e import summarise as summarise_realtime
from realtime.bench.runs import percentiles

PCM_RATE = 24_000
MAX_DECODE_SECONDS = 3600.0
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog, and then it takes a well deserved rest."
HELP = "time to first byte and real-time factor of concurrent /v1/audio/speech streams"
DESCRIPTION = __doc__ or HELP


@dataclass
class SpeechSample:
    """One request; times in seconds from sending it."""

    client: int
    index: int
    status: int = 0
    ttfb_s: float | None = None
    wall_s: float = 0.0
    audio_s: float = 0.0
    rtf: float = 0.0
    bytes: int = 0
    error: str | None = None


def audio_seconds(body: bytes, fmt: str) -> float:
    """Seconds of audio in a response body (pcm by size, other formats decoded with PyAV)."""
    if fmt == "pcm":
        return len(body) / (2 * PCM_RATE)
    from realtime.codecs import decode_audio

    pcm, _ = decode_audio(body, PCM_RATE, max_seconds=MAX_DECODE_SECONDS)
    return len(pcm) / (2 * PCM_RATE)


async def _one(http: Any, args: argparse.Namespace, client: int, index: int) -> SpeechSample:
    sample = SpeechSample(client, index)
    payload = {
        "model": "tts-1",
        "input": args.text,
        "voice": args.voice,
        "response_format": args.format,
        "speed": args.speed,
    }
    body = bytearray()
    start = time.perf_counter()
    try:
        async with http.stream("POST", f"{args.base}/audio/speech", json=payload) as response:
            sample.status = response.status_code
            async for chunk in response.aiter_raw():
                if chunk and sample.ttfb_s is None:
                    sample.ttfb_s = time.perf_counter() - start
                body += chunk
        sample.wall_s = time.perf_counter() - start
        if sample.status != 200:
            sample.error = f"HTTP {sample.status}: {bytes(body[:300]).decode(errors='replace')}"
            return sample
        sample.bytes = len(body)
        sample.audio_s = await asyncio.to_thread(audio_seconds, bytes(body), args.format)
        sample.rtf = sample.audio_s / sample.wall_s if sample.wall_s > 0 else 0.0
    except Exception as exc:  # a benchmark reports every failure instead of stopping
        sample.error = f"{type(exc).__name__}: {exc}"[:300]
        sample.wall_s = time.perf_counter() - start
    return sample


async def _level(args: argparse.Namespace, concurrency: int) -> tuple[list[SpeechSample], float]:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=args.timeout, limits=limits) as http:

        async def client(c: int) -> list[SpeechSample]:
            return [await _one(http, args, c, i) for i in range(args.requests)]

        started = time.perf_counter()
        results = await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    return [s for per_client in results for s in per_client], elapsed


def summarise(samples: list[SpeechSample], elapsed: float, concurrency: int) -> dict[str, Any]:
    """One concurrency level's figures."""
    ok = [s for s in samples if s.error is None]
    errors = [s.error for s in samples if s.error]
    total_audio = sum(s.audio_s for s in ok)
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "completed": len(ok),
        "errors": len(errors),
        "error_messages": errors[:10],
        "ttfb_s": percentiles([s.ttfb_s for s in ok if s.ttfb_s is not None]),
        "rtf": percentiles([s.rtf for s in ok]),
        "audio_s_per_request": percentiles([s.audio_s for s in ok]),
        "wall_s": elapsed,
        "throughput_audio_s_per_s": total_audio / elapsed if elapsed > 0 else 0.0,
    }


def _realtime_args(args: argparse.Namespace, concurrency: int) -> argparse.Namespace:
    split = urlsplit(args.base)
    scheme = "wss" if split.scheme == "https" else "ws"
    return argparse.Namespace(
        url=f"{scheme}://{split.netloc}/v1/realtime?model=step-audio-2-mini",
        sessions=concurrency,
        responses=args.requests,
        text=args.text,
        wav=None,
        instructions="",
        modalities="audio",
        dialect="ga",
        api_key=args.api_key,
        cushion_ms=100.0,
        timeout=args.timeout,
        transcribe=None,
        stagger_ms=0.0,
    )


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    levels = []
    for concurrency in args.concurrency:
        print(f"speech: {concurrency} concurrent x {args.requests} requests", file=sys.stderr)
        samples, elapsed = await _level(args, concurrency)
        level: dict[str, Any] = summarise(samples, elapsed, concurrency)
        if args.realtime:
            rt_args = _realtime_args(args, concurrency)
            print(f"realtime: {concurrency} sessions x {args.requests} responses", file=sys.stderr)
            rt_samples, failures, rt_elapsed = await _run_all(rt_args, None)
            realtime = summarise_realtime(rt_samples, failures, rt_elapsed, rt_args)
            level["realtime"] = {k: realtime[k] for k in ("responses", "errors", "ttfa_s", "rtf", "wall_s")}
        if args.samples:
            level["samples"] = [asdict(s) for s in samples]
        levels.append(level)
    return {
        "url": args.base,
        "format": args.format,
        "speed": args.speed,
        "text_chars": len(args.text),
        "requests_per_client": args.requests,
        "levels": levels,
    }


def _table(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    lines = [
        f"speech bench against {report['url']} ({report['format']}, {report['text_chars']} characters)",
        f"{'N':>4} {'ttfb p50':>9} {'p90':>7} {'p99':>7} (ms) {'rtf p50':>8} {'errors':>7}"
        f" {'realtime ttfa p50':>18} {'p90':>7}",
    ]
    for level in report["levels"]:
        ttfb, rtf = level["ttfb_s"], level["rtf"]
        rt = level.get("realtime", {}).get("ttfa_s", {})
        rtf50 = "-" if rtf["p50"] is None else f"{rtf['p50']:.2f}"
        lines.append(
            f"{level['concurrency']:>4} {ms(ttfb['p50']):>9} {ms(ttfb['p90']):>7} {ms(ttfb['p99']):>7}      "
            f"{rtf50:>8} {level['errors']:>7} {ms(rt.get('p50')):>18} {ms(rt.get('p90')):>7}"
        )
        lines += [f"  error: {m}" for m in level["error_messages"][:3]]
    return "\n".join(lines)


def _concurrency(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench speech`."""
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000/v1", help="base URL of the OpenAI API under test"
    )
    parser.add_argument("--spawn", action="store_true", help="start our own server on a free port first")
    parser.add_argument("--server-args", default="", help="extra `realtime serve` flags with --spawn")
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=[1, 4, 16],
        help="comma-separated concurrent streams to measure",
    )
    parser.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the input text of every request")
    parser.add_argument("--voice", default="alloy", help="the voice of every request")
    parser.add_argument(
        "--format",
        choices=["pcm", "wav", "mp3", "opus", "aac", "flac"],
        default="pcm",
        help="response_format",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="speed of every request (0.25-4)")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="also measure the Realtime path's time to first audio per level",
    )
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-local"), help="bearer key")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for any one response")
    parser.add_argument("--samples", action="store_true", help="include every request's figures in the JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; exit code 1 when any request failed."""
    if args.requests < 1:
        print("--requests must be at least 1", file=sys.stderr)
        return 2
    proc = None
    try:
        if args.spawn:
            proc, ws_url = _spawn_server(args.server_args)
            args.url = f"http://{urlsplit(ws_url).netloc}/v1"
        args.base = args.url.rstrip("/")
        report = asyncio.run(_run(args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(report) if args.json else _table(report))
    failed = sum(level["errors"] for level in report["levels"])
    failed += sum(level.get("realtime", {}).get("errors", 0) for level in report["levels"])
    return 1 if failed else 0
