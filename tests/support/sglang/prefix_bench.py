"""Measure prefix reuse across the turns of one session: through the gateway vs straight to one worker, and the
time to first audio of a late turn with and without the cached prefix (docs/DEPLOY.md).

Run: ``.venv/bin/python -m tests.support.sglang.prefix_bench [--turns 6] [--sessions 3] [--json]``

Starts two tiny CPU SGLang workers (random weights, our plugin), ``smg`` in front of them
(``consistent_hashing`` on our routing-key header), and two of our servers in-process: one on the gateway, one
on worker 0 directly. For each server it runs ``--sessions`` sessions with long instructions (the tiny tokenizer
is byte level: one token per byte) and ``--turns`` short spoken turns, recording each turn's
``usage.input_tokens``, ``usage.input_token_details.cached_tokens`` and time to first audio (client clock,
``response.create`` to the first ``response.output_audio.delta``).

Prefix reuse on vs off, same run: in each session the last two turns are measured once with the worker's
cache intact and once right after ``POST /flush_cache`` on every worker; which of the two goes first alternates
between sessions, so a drift of the shared machine does not favour either arm. A third arm goes through a
second gateway with ``--policy round_robin`` (no affinity), to show what the routing key buys.

The LLM's own share, without our server or Token2Wav: time to the first streamed chunk of a one-token
``/generate`` with a ``--prefill-tokens`` prompt, cold (right after a flush) and warm (same prefix, new last
token), ``--prefill-reps`` interleaved pairs, straight to a worker and through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from realtime.config import ServerConfig
from realtime.config_groups import LLMOptions
from tests.support.server_harness import ServerHandle, start_server
from tests.support.sglang import gateway, worker
from tests.support.sglang.tiny_checkpoint import write_tiny_checkpoint
from tests.support.wire_check import RawClient

INSTRUCTIONS_BYTES = 1800  # tokens, with the byte-level tiny tokenizer
FIRST_TEXT_ID = 1000  # prefill-probe prompts: plain text ids of the tiny vocabulary
REPLY_TOKENS = 16
FLUSH_TIMEOUT_S = 30.0
FLUSH_RETRY_S = 0.2
MS = 1000.0


@dataclass
class Turn:
    """One measured turn."""

    arm: str
    session: int
    turn: int
    input_tokens: int
    cached_tokens: int
    ttfa_ms: float
    flushed: bool


async def _flush(urls: list[str]) -> None:
    """Empty every worker's radix cache; SGLang refuses (400) while a request is still finishing, so retry."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    async with httpx.AsyncClient(timeout=FLUSH_TIMEOUT_S) as http:
        for url in urls:
            while (response := await http.post(f"{url}/flush_cache")).status_code != httpx.codes.OK:
                if time.monotonic() > deadline:
                    response.raise_for_status()
                await asyncio.sleep(FLUSH_RETRY_S)


async def _turn(client: RawClient, text: str) -> tuple[dict[str, Any], float]:
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    await client.until("conversation.item.done")
    started = time.perf_counter()
    await client.send({"type": "response.create"})
    first_audio = None
    while True:
        event = await client.recv()
        if event["type"] == "response.output_audio.delta" and first_audio is None:
            first_audio = time.perf_counter() - started
        if event["type"] == "response.done":
            assert event["response"]["status"] in ("completed", "incomplete"), event["response"]
            return event["response"]["usage"], (first_audio or float("nan")) * MS


async def _session(arm: str, server: ServerHandle, index: int, turns: int, workers: list[str]) -> list[Turn]:
    client = await RawClient.connect(server.ws_url())
    instructions = (f"{arm} session {index}. " + "Speak briefly and kindly. " * 200)[:INSTRUCTIONS_BYTES]
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": instructions, "max_output_tokens": REPLY_TOKENS},
        }
    )
    await client.until("session.updated")
    flush_at = turns - 2 if index % 2 == 0 else turns - 1  # alternate which late turn loses its prefix
    out = []
    try:
        for turn in range(turns):
            if turn == flush_at:
                await _flush(workers)
            usage, ttfa = await _turn(client, f"turn {turn}: and then what happened?")
            cached = (usage.get("input_token_details") or {}).get("cached_tokens", 0)
            out.append(Turn(arm, index, turn, usage["input_tokens"], cached, ttfa, turn == flush_at))
            print(out[-1], flush=True)
    finally:
        await client.close()
    return out


async def _first_chunk_ms(http: httpx.AsyncClient, url: str, ids: list[int], key: str) -> float:
    body = {"input_ids": ids, "stream": True, "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}}
    started = time.perf_counter()
    elapsed = float("nan")  # no chunk at all shows as NaN
    async with http.stream(
        "POST", f"{url}/generate", json=body, headers={"x-smg-routing-key": key}
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():  # read to the end: the connection is reused
            if line.startswith("data: {") and math.isnan(elapsed):
                elapsed = (time.perf_counter() - started) * MS
    return elapsed


async def _prefill_probe(arms: dict[str, str], workers: list[str], tokens: int, reps: int) -> dict[str, Any]:
    """Cold vs warm time to the first chunk of a one-token generation, interleaved per repetition."""
    prefix = [FIRST_TEXT_ID + (i * 7919) % 50000 for i in range(tokens - 1)]
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=FLUSH_TIMEOUT_S * 4) as http:
        for arm, url in arms.items():
            cold, warm = [], []
            for rep in range(reps):
                await _flush(workers)
                cold.append(await _first_chunk_ms(http, url, [*prefix, 2 * rep], f"probe-{arm}"))
                warm.append(await _first_chunk_ms(http, url, [*prefix, 2 * rep + 1], f"probe-{arm}"))
            out[arm] = {
                "prompt_tokens": tokens,
                "cold_ms_median": statistics.median(cold),
                "warm_ms_median": statistics.median(warm),
                "cold_ms": [round(v) for v in cold],
                "warm_ms": [round(v) for v in warm],
            }
            print(arm, out[arm], flush=True)
    return out


def _summary(rows: list[Turn], turns: int) -> dict[str, Any]:
    late = {turns - 2, turns - 1}
    summary: dict[str, Any] = {}
    for arm in sorted({r.arm for r in rows}):
        mine = [r for r in rows if r.arm == arm]
        reused = [r for r in mine if r.turn in late and not r.flushed]
        flushed = [r for r in mine if r.flushed]
        steady = [r for r in mine if 0 < r.turn < turns - 2]
        summary[arm] = {
            "cached_ratio_turns_2_to_n_minus_2": statistics.mean(
                r.cached_tokens / r.input_tokens for r in steady
            ),
            "cached_ratio_late_reused": statistics.mean(r.cached_tokens / r.input_tokens for r in reused),
            "cached_ratio_late_flushed": statistics.mean(r.cached_tokens / r.input_tokens for r in flushed),
            "ttfa_ms_late_reused_median": statistics.median(r.ttfa_ms for r in reused),
            "ttfa_ms_late_flushed_median": statistics.median(r.ttfa_ms for r in flushed),
            "late_input_tokens": statistics.mean(r.input_tokens for r in reused + flushed),
        }
    return summary


async def _run(args: argparse.Namespace, folder: Path) -> tuple[list[Turn], dict[str, Any]]:
    checkpoint = write_tiny_checkpoint(folder / "checkpoint")
    workers = [worker.launch_worker(checkpoint, folder / f"worker{i}.log") for i in range(2)]
    processes = list(workers)
    servers: list[ServerHandle] = []
    try:
        started = time.monotonic()
        for w in workers:
            await asyncio.to_thread(w.wait_ready, "/model_info")
        urls = [w.url for w in workers]
        smg = gateway.launch_gateway(urls, folder / "gateway.log")
        processes.append(smg)
        await asyncio.to_thread(smg.wait_ready, "/readiness", gateway.READY_TIMEOUT_S)
        round_robin = gateway.launch_gateway(urls, folder / "gateway-rr.log", policy="round_robin")
        processes.append(round_robin)
        await asyncio.to_thread(round_robin.wait_ready, "/readiness", gateway.READY_TIMEOUT_S)
        print(f"rig ready in {time.monotonic() - started:.0f} s", flush=True)
        probe = await _prefill_probe(
            {"direct": urls[0], "gateway": smg.url}, urls, args.prefill_tokens, args.prefill_reps
        )
        arms = {"gateway": smg.url, "direct": urls[0], "gateway-round-robin": round_robin.url}
        rows: list[Turn] = []
        for arm, url in arms.items():
            config = ServerConfig(
                backend="sglang",
                llm=LLMOptions(sglang_url=url),
                model_path=str(checkpoint.path),
                cache_dir=folder / "t2w",
            )
            server = await asyncio.to_thread(start_server, config)
            servers.append(server)
            if args.sessions:
                await _session(arm, server, -1, 2, urls)  # warm-up: first requests pay one-off costs
            for index in range(args.sessions):
                rows += await _session(arm, server, index, args.turns, urls)
        return rows, {"prefill_probe": probe, **(_summary(rows, args.turns) if rows else {})}
    finally:
        for server in servers:
            server.stop()
        for process in processes:
            process.stop()


def main() -> None:
    """Entry point: run the measurement and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=6, help="turns per session (at least 4)")
    parser.add_argument("--sessions", type=int, default=2, help="sessions per arm")
    parser.add_argument("--prefill-tokens", type=int, default=3500, help="prompt length of the prefill probe")
    parser.add_argument("--prefill-reps", type=int, default=5, help="cold/warm pairs per prefill-probe arm")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prefix-bench-") as tmp:
        rows, summary = asyncio.run(_run(args, Path(tmp)))
    if args.json:
        print(json.dumps({"turns": [asdict(r) for r in rows], "summary": summary}, indent=1))
        return
    for row in rows:
        flag = " (after flush)" if row.flushed else ""
        print(
            f"{row.arm:8s} s{row.session} t{row.turn}: input {row.input_tokens:5d} cached {row.cached_tokens:5d}"
            f" ({row.cached_tokens / row.input_tokens:5.1%}) first audio {row.ttfa_ms:7.0f} ms{flag}"
        )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
