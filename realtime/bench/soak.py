"""`realtime bench soak`: many responses with cancels, disconnects and hostile events, and what they leave behind.

N clients each run M responses (a user turn, ``response.create``, every event to ``response.done``) against a
spawned server or any ``--url``. Mixed in: every ``--cancel-every``-th response is cancelled at its first
audio delta, every ``--drop-every``-th is abandoned mid-stream by closing the socket, every
``--reconnect-every``-th response starts on a new connection, and every ``--hostile-every``-th turn first sends
one hostile frame (deep nesting, wrong types, bad base64, a binary frame, a huge type string) that must come
back as a precise ``error``. ``--arm http`` soaks the HTTP doors instead (realtime/bench/soak_http.py: speech,
chat, transcriptions, voice uploads, slow bodies, disconnects), ``--arm both`` runs the two at once. It
reports responses by status, errors by code, unexpected closes, and the server's RSS and task count (from
``/health``) at the start, after warm-up and at the end, with what is still held once every client has left:
sessions, decoder streams, transcription slots, HTTP requests, body memory and connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from realtime.bench import soak_http
from realtime.bench.e2e import _spawn_server

HELP = "soak: many responses (Realtime and/or HTTP) with cancels, disconnects, hostile events; RSS and leaks"
DESCRIPTION = __doc__ or HELP
MAX_FRAME_BYTES = 16 * 1024 * 1024
SETTLE_S = 3.0  # after the clients leave: time for the server to finish closing before the last look
MB = 1024 * 1024
HOSTILE_FRAMES: list[str | bytes] = [
    '{"type": "session.update", "session": ' + "[" * 5000 + "]" * 5000 + "}",
    json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": 7}}),
    json.dumps({"type": "session.update", "session": {"input_audio_format": {"x": 1}}}),
    json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": {"a": 1}}}),
    json.dumps({"type": "input_audio_buffer.append", "audio": "not base64!"}),
    json.dumps({"type": "x" * 100_000}),
    json.dumps({"type": "response.create", "event_id": ["not", "a", "string"]}),
    b"\x00binary frame",
]


@dataclass
class SoakTally:
    """Everything the clients saw (event loop only)."""

    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unexpected_closes: int = 0
    dropped: int = 0
    hostile_sent: int = 0
    finished: int = 0


def _health_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/health"


def _health(url: str, key: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        data: dict[str, Any] = json.loads(reply.read())
    return data


def _figures(health: dict[str, Any]) -> dict[str, Any]:
    streams = health.get("decoder_streams") or {}
    return {
        "rss_mb": round(health.get("rss_bytes", 0) / MB, 1),
        "tasks": health.get("tasks"),
        "sessions": health.get("sessions"),
        "decoder_streams_live": streams.get("live"),
        "transcriptions_live": (health.get("transcriptions") or {}).get("live"),
        "http_requests": health.get("http_requests"),
        "body_memory_bytes": (health.get("body_memory") or {}).get("used_bytes"),
        # the /health request that reads these figures holds one connection itself
        "other_connections": max(0, ((health.get("connections") or {}).get("open") or 1) - 1),
    }


async def _connect(args: argparse.Namespace) -> Any:
    import websockets

    ws = await websockets.connect(
        args.url, additional_headers={"Authorization": f"Bearer {args.api_key}"}, max_size=MAX_FRAME_BYTES
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
    if first.get("type") != "session.created":
        raise RuntimeError(f"expected session.created, got {first.get('type')}")
    return ws


async def _until(ws: Any, args: argparse.Namespace, tally: SoakTally, done: str) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
        if event["type"] == "error":
            tally.errors[event["error"].get("code") or "none"] += 1
        if event["type"] == done:
            return event


async def _hostile(ws: Any, index: int, args: argparse.Namespace, tally: SoakTally) -> None:
    await ws.send(HOSTILE_FRAMES[index % len(HOSTILE_FRAMES)])
    tally.hostile_sent += 1
    await _until(ws, args, tally, "error")


async def _one_response(ws: Any, turn: int, args: argparse.Namespace, tally: SoakTally) -> bool:
    """Run one response; False when it was abandoned by closing the socket."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": args.text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    modalities = ["audio"] if args.modalities == "audio" else ["text"]
    await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": modalities}}))
    drop = args.drop_every and turn % args.drop_every == args.drop_every - 1
    cancel = args.cancel_every and turn % args.cancel_every == args.cancel_every - 1
    if drop or cancel:
        first = "response.output_audio.delta" if args.modalities == "audio" else "response.output_text.delta"
        await _until(ws, args, tally, first)
        if drop:
            await ws.close()
            tally.dropped += 1
            return False
        await ws.send(json.dumps({"type": "response.cancel"}))
    event = await _until(ws, args, tally, "response.done")
    tally.statuses[event["response"]["status"]] += 1
    return True


async def _client(index: int, args: argparse.Namespace, tally: SoakTally, warm: asyncio.Event) -> None:
    import websockets

    ws = None
    try:
        for turn in range(args.responses):
            if ws is None or (args.reconnect_every and turn % args.reconnect_every == 0 and turn):
                if ws is not None:
                    await ws.close()
                ws = await _connect(args)
            if args.hostile_every and turn % args.hostile_every == 0:
                await _hostile(ws, index + turn, args, tally)
            try:
                kept = await _one_response(ws, turn, args, tally)
            except websockets.ConnectionClosed:
                tally.unexpected_closes += 1
                kept = False
            if not kept:
                ws = None
            tally.finished += 1
            if tally.finished >= args.warmup:
                warm.set()
    finally:
        if ws is not None:
            await ws.close()


async def _soak(args: argparse.Namespace) -> dict[str, Any]:
    health_url = _health_url(args.url)
    start = await asyncio.to_thread(_health, health_url, args.api_key)
    tally = SoakTally()
    warm = asyncio.Event()
    warm_figures: dict[str, Any] = {}

    async def watch_warm() -> None:
        await warm.wait()
        warm_figures.update(_figures(await asyncio.to_thread(_health, health_url, args.api_key)))

    t0 = time.perf_counter()
    watcher = asyncio.create_task(watch_warm())
    http_tally = soak_http.HttpTally()
    arms: list[Any] = []
    if args.arm in ("realtime", "both"):
        arms.extend(_client(i, args, tally, warm) for i in range(args.clients))
    if args.arm in ("http", "both"):
        base_url = health_url.rsplit("/health", 1)[0]
        arms.append(soak_http.run_http_clients(base_url, args, http_tally, warm))
    results = await asyncio.gather(*arms, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    await asyncio.wait({watcher}, timeout=30)
    watcher.cancel()
    await asyncio.sleep(SETTLE_S)
    end = await asyncio.to_thread(_health, health_url, args.api_key)
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    start_f, end_f = _figures(start), _figures(end)
    warm_rss = warm_figures.get("rss_mb") or start_f["rss_mb"]
    drift = (end_f["rss_mb"] - warm_rss) / warm_rss * 100 if warm_rss else 0.0
    report: dict[str, Any] = {"arm": args.arm}
    if args.arm in ("http", "both"):
        report["http"] = soak_http.http_report(http_tally)
    return report | {
        "clients": args.clients if args.arm != "http" else 0,
        "responses_per_client": args.responses,
        "elapsed_s": round(elapsed, 1),
        "responses_by_status": dict(tally.statuses),
        "responses_abandoned": tally.dropped,
        "errors_by_code": dict(tally.errors),
        "hostile_frames_sent": tally.hostile_sent,
        "unexpected_closes": tally.unexpected_closes,
        "client_failures": failures,
        "server": {"start": start_f, "after_warmup": warm_figures, "end": end_f},
        "rss_drift_after_warmup_pct": round(drift, 1),
        "held_after_clients_left": {
            "sessions": end_f["sessions"],
            "decoder_streams": end_f["decoder_streams_live"],
            "transcriptions": end_f["transcriptions_live"],
            "http_requests": end_f["http_requests"],
            "body_memory_bytes": end_f["body_memory_bytes"],
            "connections": end_f["other_connections"],
            "tasks_over_start": (end_f["tasks"] or 0) - (start_f["tasks"] or 0),
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench soak`."""
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8000/v1/realtime?model=step-audio-2-mini",
        help="Realtime WebSocket URL of the server under test (its /health gives RSS and tasks)",
    )
    parser.add_argument(
        "--arm",
        choices=["realtime", "http", "both"],
        default="realtime",
        help="what to soak: Realtime WebSocket sessions, the HTTP doors, or both at once",
    )
    parser.add_argument("--spawn", action="store_true", help="start our own server on a free port first")
    parser.add_argument("--server-args", default="", help="extra `realtime serve` flags with --spawn")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--responses", type=int, default=50, help="responses per client")
    parser.add_argument("--cancel-every", type=int, default=3, help="cancel every Nth response (0: never)")
    parser.add_argument(
        "--drop-every",
        type=int,
        default=7,
        help="close the socket mid-response every Nth response (0: never)",
    )
    parser.add_argument("--reconnect-every", type=int, default=10, help="new connection every N responses")
    parser.add_argument(
        "--hostile-every", type=int, default=5, help="a hostile frame every N turns (0: never)"
    )
    parser.add_argument("--warmup", type=int, default=40, help="responses before the after-warm-up look")
    parser.add_argument("--text", default="Tell me something nice about the sea.", help="the user turn")
    parser.add_argument("--modalities", choices=["audio", "text"], default="audio", help="output modality")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "sk-local"), help="bearer key")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for any one event")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    soak_http.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the soak; exit code 1 when a client failed, closed unexpectedly, or something was left held."""
    if args.clients < 1 or args.responses < 1:
        print("--clients and --responses must be at least 1", file=sys.stderr)
        return 2
    proc = None
    try:
        if args.spawn:
            proc, args.url = _spawn_server(args.server_args)
        if args.arm != "http":
            total = args.clients * args.responses
            print(
                f"soaking {args.clients} x {args.responses} = {total} responses at {args.url}",
                file=sys.stderr,
            )
        if args.arm != "realtime":
            total = args.http_clients * args.http_requests
            print(
                f"soaking {args.http_clients} x {args.http_requests} = {total} HTTP requests", file=sys.stderr
            )
        report = asyncio.run(_soak(args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps(report, indent=None if args.json else 2))
    held = report["held_after_clients_left"]
    http_failed = report.get("http", {}).get("client_failure_count", 0)
    bad = (
        report["client_failures"]
        or http_failed
        or report["unexpected_closes"]
        or held["sessions"]
        or held["decoder_streams"]
        or held["transcriptions"]
        or held["http_requests"]
        or held["body_memory_bytes"]
    )
    return 1 if bad else 0
