"""Metrics live on a per-app registry and render in the Prometheus text format."""

from __future__ import annotations

from prometheus_client import REGISTRY

from realtime.metrics import Metrics


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.session_opened()
    assert a.active_sessions == 1 and b.active_sessions == 0
    assert REGISTRY.get_sample_value("streamvoice_active_sessions") is None  # not the global registry


def test_render_contains_every_family() -> None:
    m = Metrics()
    m.session_opened()
    m.session_opened()
    m.session_closed()
    m.response_started()
    m.response_finished("completed")
    m.response_started()
    m.response_finished("cancelled")
    m.response_cancelled("client_cancelled")
    m.error("unknown_voice")
    m.observe_time_to_first_audio(0.25)
    m.observe_decode(0.1, 1.0)
    m.observe_decode(0.1, 0.0)  # no audio: no real-time factor
    m.observe_chunk_overhead(0.0004)
    m.observe_output_tokens(31)
    m.observe_delta_overhead(0.002)
    body, content_type = m.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    for line in [
        "streamvoice_active_sessions 1.0",
        "streamvoice_sessions_total 2.0",
        'streamvoice_responses_total{status="completed"} 1.0',
        'streamvoice_responses_total{status="cancelled"} 1.0',
        'streamvoice_response_cancels_total{reason="client_cancelled"} 1.0',
        'streamvoice_errors_total{code="unknown_voice"} 1.0',
        "streamvoice_time_to_first_audio_seconds_count 1.0",
        "streamvoice_token2wav_real_time_factor_count 1.0",
        "streamvoice_audio_chunk_overhead_seconds_count 1.0",
        "streamvoice_output_tokens_total 31.0",
        "streamvoice_audio_delta_send_seconds_count 1.0",
        "streamvoice_active_responses 0.0",
    ]:
        assert line in text, line
