"""Measure time to first audio and the server's own per-delta overhead on the embedded pipeline.

Run: ``.venv/bin/python -m tests.support.measure_latency [--tokens-per-second 100] [--responses 20]``

Starts a real server in-process (synthetic backend at the given rate, the tiny random-weight Token2Wav),
drives responses over one raw WebSocket and reports:

- time to first audio: client clock, from sending ``response.create`` to receiving the first
  ``response.output_audio.delta`` (warm-up responses excluded), p50 / p95;
- per-delta server overhead: server clock, from the moment a decoded PCM chunk reached the session to the
  moment each of its delta frames was written to the socket (slicing, encoding, queueing, sending), p50 / p95.
  Recorded through the ``observe_delta_overhead`` hook that realtime/session/response.py calls when the metrics
  object provides it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from realtime.config import ServerConfig
from tests.support.server_harness import start_server
from tests.support.wire_check import RawClient

WARMUP_RESPONSES = 2
MS = 1000.0


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile of ``values``."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _drive(url: str, responses: int) -> list[float]:
    client = await RawClient.connect(url)
    push_to_talk = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    await client.send({"type": "session.update", "session": push_to_talk})
    await client.recv()
    ttfa = []
    for index in range(WARMUP_RESPONSES + responses):
        content = [{"type": "input_text", "text": f"question number {index}"}]
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": content},
            }
        )
        await client.until("conversation.item.done")
        start = time.perf_counter()
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        ttfa.append(time.perf_counter() - start)
        await client.until("response.done")
    await client.close()
    return ttfa[WARMUP_RESPONSES:]


def main() -> None:
    """Parse flags, run, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens-per-second", type=float, default=100.0, help="synthetic backend rate")
    parser.add_argument("--responses", type=int, default=20, help="measured responses (after 2 warm-ups)")
    args = parser.parse_args()
    config = ServerConfig(
        backend="synthetic",
        synthetic_tokens_per_second=args.tokens_per_second,
        cache_dir=Path(tempfile.mkdtemp(prefix="streamvoice-measure-")),
    )
    server = start_server(config)
    overheads: list[float] = []
    assert server.runtime is not None
    server.runtime.metrics.observe_delta_overhead = overheads.append  # type: ignore[attr-defined]
    try:
        ttfa = asyncio.run(_drive(server.ws_url(), args.responses))
    finally:
        server.stop()
    print(f"synthetic backend {args.tokens_per_second:g} tokens/s, tiny random-weight Token2Wav, CPU")
    print(
        f"time to first audio over {len(ttfa)} responses: p50 {percentile(ttfa, 50) * MS:.1f} ms, "
        f"p95 {percentile(ttfa, 95) * MS:.1f} ms"
    )
    print(
        f"per-delta overhead (PCM ready -> frame sent) over {len(overheads)} deltas: "
        f"p50 {percentile(overheads, 50) * MS:.2f} ms, p95 {percentile(overheads, 95) * MS:.2f} ms"
    )


if __name__ == "__main__":
    main()
