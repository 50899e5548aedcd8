"""The speech benchmark's arithmetic and a tiny live run against the test server."""

from __future__ import annotations

import argparse

import pytest

from realtime.bench.speech import SpeechSample, _concurrency, _run, audio_seconds, summarise
from realtime.codecs import SpeechFormat, StreamEncoder
from tests.support.server_harness import ServerHandle


def test_summary_percentiles_rtf_and_errors() -> None:
    good = SpeechSample(client=0, index=0, status=200, ttfb_s=0.25, wall_s=2.0, audio_s=4.0, rtf=2.0)
    bad = SpeechSample(client=1, index=0, status=500, error="HTTP 500")
    level = summarise([good, bad], elapsed=2.0, concurrency=2)
    assert (level["completed"], level["errors"]) == (1, 1)
    assert level["ttfb_s"]["p50"] == pytest.approx(0.25)
    assert level["rtf"]["p50"] == pytest.approx(2.0)
    assert level["throughput_audio_s_per_s"] == pytest.approx(2.0)


def test_audio_seconds_of_each_format() -> None:
    pcm = bytes(2 * 24_000)  # one second of silence
    assert audio_seconds(pcm, "pcm") == pytest.approx(1.0)
    encoder = StreamEncoder(SpeechFormat.OPUS)
    assert audio_seconds(encoder.encode(pcm) + encoder.finish(), "opus") == pytest.approx(1.0, abs=0.05)


def test_concurrency_list() -> None:
    assert _concurrency("1,4,16") == [1, 4, 16]
    with pytest.raises(argparse.ArgumentTypeError):
        _concurrency("0")


async def test_a_live_run_reports_every_level(server: ServerHandle) -> None:
    args = argparse.Namespace(
        base=server.http_url("/v1"),
        concurrency=[1, 2],
        requests=1,
        text="A short sentence.",
        voice="alloy",
        format="mp3",
        speed=1.0,
        realtime=True,
        api_key="x",
        timeout=60.0,
        samples=False,
    )
    report = await _run(args)
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["errors"] == 0 and level["completed"] == level["concurrency"]
        assert level["ttfb_s"]["p50"] > 0 and level["audio_s_per_request"]["p50"] > 0
        assert level["realtime"]["errors"] == 0 and level["realtime"]["ttfa_s"]["p50"] > 0
