"""The e2e benchmark's arithmetic: the simulated player and the report."""

from __future__ import annotations

import argparse

import pytest

from realtime.bench.e2e import ResponseSample, simulate_player, summarise


def test_player_never_underruns_when_audio_arrives_ahead() -> None:
    # 100 ms deltas arriving every 50 ms: always ahead of 1x playback.
    arrivals = [(0.05 * i, 0.1 * (i + 1)) for i in range(20)]
    assert simulate_player(arrivals, cushion_s=0.1) == (0, 0.0)


def test_player_counts_a_gap_and_its_length() -> None:
    # 0.2 s of audio at t=0, the next 0.2 s only at t=0.6: a 100 ms cushion plays 0.1..0.3, then waits 0.3 s.
    count, silence = simulate_player([(0.0, 0.2), (0.6, 0.4)], cushion_s=0.1)
    assert count == 1
    assert silence == pytest.approx(0.3)


def test_player_stall_shifts_later_deadlines() -> None:
    # After one stall the player is late by the stall, so a delta that would have been late is not.
    count, _ = simulate_player([(0.0, 0.1), (0.5, 0.2), (0.6, 0.3)], cushion_s=0.0)
    assert count == 1


def test_summary_reports_percentiles_and_errors() -> None:
    args = argparse.Namespace(
        url="ws://x", sessions=2, responses=1, wav=None, dialect="ga", cushion_ms=100.0, stagger_ms=0.0
    )
    good = ResponseSample(
        session=0, index=0, status="completed", ttfa_s=0.2, ttft_s=0.1, wall_s=2.0, audio_s=4.0
    )
    good.rtf = 2.0
    bad = ResponseSample(session=1, index=0, status="failed", error="boom", wall_s=1.0)
    report = summarise([good, bad], [], elapsed=2.0, args=args)
    assert report["completed"] == 1
    assert report["errors"] == 1
    assert report["ttfa_s"]["p50"] == pytest.approx(0.2)
    assert report["rtf"]["p50"] == pytest.approx(2.0)
    assert report["throughput_audio_s_per_s"] == pytest.approx(2.0)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_transcribe_flag_turns_input_transcription_on(dialect: str) -> None:
    from realtime.bench.e2e import _Client

    base = {"instructions": "", "modalities": "audio", "dialect": dialect, "api_key": "k"}
    on = _Client(argparse.Namespace(**base, transcribe="step-audio-2-mini"), 0, None)._session_update()[
        "session"
    ]
    off = _Client(argparse.Namespace(**base, transcribe=None), 0, None)._session_update()["session"]
    want = {"model": "step-audio-2-mini"}
    if dialect == "ga":
        assert on["audio"]["input"]["transcription"] == want and "transcription" not in off["audio"]["input"]
    else:
        assert on["input_audio_transcription"] == want and "input_audio_transcription" not in off


def test_batch_histogram_is_the_difference_of_two_scrapes() -> None:
    from realtime.bench.server_metrics import batch_histogram, metrics_url, parse_batch_buckets

    def page(counts: dict[str, int]) -> str:
        lines = [
            "# HELP streamvoice_token2wav_batch_size x",
            "# TYPE streamvoice_token2wav_batch_size histogram",
        ]
        lines += [f'streamvoice_token2wav_batch_size_bucket{{le="{le}"}} {n}.0' for le, n in counts.items()]
        return "\n".join([*lines, "streamvoice_token2wav_batch_size_count 9.0"])

    before = parse_batch_buckets(page({"1.0": 2, "2.0": 2, "4.0": 2, "+Inf": 2}))
    after = parse_batch_buckets(page({"1.0": 3, "2.0": 5, "4.0": 9, "+Inf": 10}))
    assert batch_histogram(before, after) == {"1": 1, "2": 2, "3-4": 4, "5-inf": 1}
    assert parse_batch_buckets("other_metric 1") is None
    assert batch_histogram(None, None) is None
    assert metrics_url("wss://h:9/v1/realtime?model=x") == "https://h:9/metrics"


def test_refusals_are_counted_apart_and_queue_time_is_separated() -> None:
    args = argparse.Namespace(
        url="ws://x", sessions=3, responses=1, wav=None, dialect="ga", cushion_ms=100.0, stagger_ms=0.0
    )
    queued = ResponseSample(
        session=0, index=0, status="completed", queue_s=0.5, ttfa_s=0.9, wall_s=2.0, audio_s=4.0
    )
    at_once = ResponseSample(
        session=1, index=0, status="completed", queue_s=0.0, ttfa_s=0.3, wall_s=2.0, audio_s=4.0
    )
    refused = ResponseSample(session=2, index=0, status="refused", refused=True, wall_s=2.0)
    report = summarise([queued, at_once, refused], [], elapsed=2.0, args=args)
    assert report["refused"] == 1 and report["errors"] == 0 and report["completed"] == 2
    assert report["queue_s"]["p99"] == pytest.approx(0.5)
    assert sorted([report["ttfa_after_queue_s"]["p50"], report["ttfa_after_queue_s"]["p99"]]) == [
        pytest.approx(0.3),
        pytest.approx(0.4),
    ]


def test_the_ramp_capacity_is_the_last_clean_step() -> None:
    from realtime.bench.ramp import RampStep, _capacity

    def step(sessions: int, underruns: int = 0, refused: int = 0) -> RampStep:
        return RampStep(
            sessions, sessions, sessions - refused, refused, 0, underruns, 0.0, 0.0, 0.3, 0.4, 2.0 * sessions
        )

    found = _capacity([step(1), step(2), step(4, underruns=3)])
    assert found == {"sessions": 2, "audio_s_per_s": 4.0, "stopped_at": 4, "stopped_by": "3 underruns"}
    found = _capacity([step(1), step(2, refused=1)])
    assert found["sessions"] == 1 and found["stopped_by"] == "1 refused"
    assert _capacity([step(1)])["stopped_at"] is None
