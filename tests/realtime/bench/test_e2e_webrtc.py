"""The WebRTC arm of `realtime bench e2e`: its figures from decoded frames, and one real run against the server."""

from __future__ import annotations

import argparse

from realtime.bench import e2e
from realtime.bench.e2e_webrtc import analyse, format_calls, http_base, run_calls, summarise_calls
from realtime.bench.webrtc_client import HeardFrame
from tests.support.server_harness import ServerHandle

LOUD, QUIET = 2000, 0


def frames(levels: list[int], start: float = 1.0, step: float = 0.020) -> list[HeardFrame]:
    return [HeardFrame(start + i * step, level) for i, level in enumerate(levels)]


def test_the_first_audible_frame_and_the_gaps_between_audible_frames() -> None:
    heard = frames([QUIET, QUIET, LOUD, LOUD, QUIET, QUIET, LOUD, QUIET, LOUD, QUIET, QUIET])
    first, audio_s, jitter_ms, underruns, underrun_s = analyse(heard, start=0.9)
    assert round(first, 3) == 0.14  # frame 2, 1.04 s, against a start at 0.9 s
    assert round(audio_s, 3) == 0.08 and jitter_ms < 1e-9  # four audible frames, arriving every 20 ms
    assert (underruns, round(underrun_s, 3)) == (2, 0.06)  # the silence before and after it is not a gap
    assert analyse(frames([QUIET] * 5), start=0.0) == (None, 0.0, 0.0, 0, 0.0)


def test_late_frames_show_as_jitter() -> None:
    steady = analyse(frames([LOUD] * 50), start=0.0)[2]
    bursty = [HeardFrame(1.0 + (i // 5) * 0.1, LOUD) for i in range(50)]  # five at a time, every 100 ms
    assert steady < 1e-9 and analyse(bursty, start=0.0)[2] > 10.0


def test_the_url_of_the_websocket_arm_gives_the_http_base() -> None:
    assert http_base("ws://127.0.0.1:8000/v1/realtime?model=m") == "http://127.0.0.1:8000"
    assert http_base("wss://voice.example.com/v1/realtime") == "https://voice.example.com"


async def test_the_webrtc_arm_against_the_server(server: ServerHandle) -> None:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    args = parser.parse_args(
        ["--url", server.ws_url(), "--transport", "webrtc", "--responses", "1", "--timeout", "60"]
    )
    samples, failures, elapsed = await run_calls(args, None)
    report = summarise_calls(samples, failures, elapsed)
    assert report["completed"] == 1 and report["errors"] == 0, report
    heard, started = report["ttfa_heard_s"], report["ttfa_event_s"]
    assert heard["p50"] is not None and started["p50"] is not None and heard["p50"] >= started["p50"]
    assert report["audio_s_per_response"]["p50"] > 0
    assert "first audio heard" in "\n".join(format_calls(report))
