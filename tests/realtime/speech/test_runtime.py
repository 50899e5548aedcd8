"""Runtime: voices, errors surfaced while iterating, /health description, and the embedded tiny decoder."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime.backends.base import GenerationInput, PromptTurn
from realtime.backends.synthetic import SyntheticBackend
from realtime.commands import serve
from realtime.config import ServerConfig, parse_voice_spec
from realtime.errors import SpeechError
from realtime.metrics import Metrics
from realtime.speech.reply import AudioChunk, GenerationDone
from realtime.speech.runtime import DEMO_NOTICE, Runtime
from realtime.speech.voices import VoiceRegistry, default_voice_path
from realtime.speech.worker import InferenceWorker
from streaming_parser import AudioCodes, AudioTokenParser
from tests.support.speech_double import SAMPLES_PER_CODE, ScheduleDecoder

FAST = 50_000.0


def _request(rid: str = "r1") -> GenerationInput:
    return GenerationInput(rid=rid, turns=[PromptTurn("user", "say something")])


def _codes(backend: SyntheticBackend, request: GenerationInput) -> list[int]:
    parser = AudioTokenParser(backend.vocab, starts_in_speech=True)
    events = parser.feed(backend.reply_ids(request)) + parser.flush()
    return [c for e in events if isinstance(e, AudioCodes) for c in e.codes]


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    decoder = ScheduleDecoder()
    worker: InferenceWorker[Any] = InferenceWorker(lambda: decoder)
    await worker.start()
    voices: VoiceRegistry[Any] = VoiceRegistry.from_specs([])
    backend = SyntheticBackend(tokens_per_second=FAST, prefill_seconds=0)
    rt = Runtime(ServerConfig(), backend, worker, voices, Metrics(), decoder="test double")
    await rt.load_voices()
    await rt.warm_up()
    yield rt
    await rt.aclose()


async def test_respond_streams_with_the_loaded_voice(runtime: Runtime) -> None:
    events = [e async for e in runtime.reply(_request(), voice="default")]
    assert isinstance(events[-1], GenerationDone)
    samples = sum(len(e.pcm16) // 2 for e in events if isinstance(e, AudioChunk))
    assert isinstance(runtime.backend, SyntheticBackend)
    assert samples == SAMPLES_PER_CODE * len(_codes(runtime.backend, _request()))


async def test_unknown_voice_raises_while_iterating(runtime: Runtime) -> None:
    stream = runtime.reply(_request(), voice="nobody")  # the call itself never raises
    with pytest.raises(SpeechError) as info:
        await stream.__anext__()
    assert info.value.code == "unknown_voice"
    assert "default" in info.value.message


async def test_describe_says_it_is_the_embedded_demo(runtime: Runtime) -> None:
    info = runtime.describe()
    assert info["embedded_demo"] is True and info["notice"] == DEMO_NOTICE
    assert "random weights" in DEMO_NOTICE.lower() and "--backend sglang" in DEMO_NOTICE
    assert info["voices"] == ["default"] and info["backend"] == "synthetic"


async def test_closed_runtime_refuses_responses(runtime: Runtime) -> None:
    await runtime.aclose()
    await runtime.aclose()
    with pytest.raises(SpeechError) as info:
        await runtime.reply(_request(), voice="default").__anext__()
    assert info.value.code == "worker_closed"


def test_voice_registry(tmp_path: Path) -> None:
    wav = tmp_path / "alice.wav"
    wav.write_bytes(default_voice_path().read_bytes())
    registry: VoiceRegistry[str] = VoiceRegistry.from_specs([("zed", wav), ("alice", wav)])
    assert registry.names() == ["default", "alice", "zed"]
    assert default_voice_path().is_file()
    with pytest.raises(SpeechError) as missing:
        registry.add("ghost", tmp_path / "missing.wav")
    assert missing.value.code == "voice_not_found"
    with pytest.raises(SpeechError) as unknown:
        registry.check("bob")
    assert unknown.value.code == "unknown_voice"
    with pytest.raises(SpeechError):
        VoiceRegistry.from_specs([], default="bob")


def test_config_precedence_and_validation(tmp_path: Path) -> None:
    env = {
        "STREAMVOICE_PORT": "9001",
        "STREAMVOICE_BACKEND": "sglang",
        "STREAMVOICE_VOICES": f"a={tmp_path}/a.wav, b={tmp_path}/b.wav",
        "STREAMVOICE_TOKEN2WAV_DIR": str(tmp_path),
        "STREAMVOICE_SYNTHETIC_TOKENS_PER_SECOND": "100",
    }
    config = ServerConfig.from_env(env, port=9002, host=None)
    assert config.port == 9002 and config.host == "127.0.0.1" and config.backend == "sglang"
    assert [name for name, _ in config.voices] == ["a", "b"]
    assert config.token2wav_dir == tmp_path
    assert config.synthetic_tokens_per_second == 100.0
    for bad in (
        {"STREAMVOICE_PORT": "x"},
        {"STREAMVOICE_BACKEND": "vllm"},
        {"STREAMVOICE_FIRST_HOP_TOKENS": "2"},
    ):
        with pytest.raises(ValueError):
            ServerConfig.from_env(bad)
    with pytest.raises(ValueError):
        parse_voice_spec("no-equals-sign")


def test_serve_flags_override_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMVOICE_HOP_TOKENS", "20")
    monkeypatch.setenv("STREAMVOICE_PORT", "7000")
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "7001",
            "--first-chunk",
            "12",
            "--voice",
            f"x={tmp_path}/x.wav",
            "--cache-dir",
            str(tmp_path),
        ]
    )
    config = serve.config_from_args(args)
    assert (config.port, config.first_hop_tokens, config.hop_tokens) == (7001, 12, 20)
    assert config.voices == (("x", tmp_path / "x.wav"),)
    assert config.cache_dir == tmp_path
    help_text = parser.format_help()
    for flag in ("--host", "--backend", "--token2wav-dir", "--device", "--dtype", "--voice", "--first-chunk"):
        assert flag in help_text


@pytest.mark.slow
async def test_embedded_tiny_decoder_end_to_end(tmp_path: Path) -> None:
    """Runtime.create on the embedded default: tiny make-dummy Token2Wav in the cache, real decoding."""
    config = ServerConfig(cache_dir=tmp_path, synthetic_tokens_per_second=FAST)
    rt = await Runtime.create(config)
    try:
        marker_files = sorted(p.name for p in config.embedded_token2wav_dir.iterdir())
        assert "flow.pt" in marker_files and ".streamvoice-complete" in marker_files
        assert rt.is_embedded_demo and rt.sample_rate == 24_000
        request = _request()
        events = [e async for e in rt.reply(request, voice="default")]
        pcm = b"".join(e.pcm16 for e in events if isinstance(e, AudioChunk))
        assert isinstance(rt.backend, SyntheticBackend)
        assert len(pcm) // 2 == SAMPLES_PER_CODE * len(_codes(rt.backend, request))
        samples = np.frombuffer(pcm, "<i2")
        assert samples.std() > 0  # real (random-weight) audio, not silence
        done = events[-1]
        assert isinstance(done, GenerationDone)
        assert done.usage.output_audio_seconds == pytest.approx(samples.size / 24_000)
    finally:
        await rt.aclose()
    # a second start reuses the cached model instead of regenerating it
    stamp = (config.embedded_token2wav_dir / "flow.pt").stat().st_mtime_ns
    rt2 = await Runtime.create(config)
    await rt2.aclose()
    assert (config.embedded_token2wav_dir / "flow.pt").stat().st_mtime_ns == stamp
