"""Prompt frontend: feature shapes and ranges, channel and rate handling, bad input, the voice cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as audio_functional

from token2wav.audio_io import read_prompt_audio
from token2wav.dummy import make_dummy_model_dir
from token2wav.errors import ModelLoadError, VoiceError
from token2wav.frontend import (
    MEL_BINS,
    PromptFrontend,
    align_prompt_mel,
    prompt_mel_spectrogram,
    slaney_mel_basis,
    speaker_fbank,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VOICE = REPO / "realtime" / "assets" / "voices" / "default.wav"
RATE = 24_000
TOKEN_RATE = 25


def speechlike(seconds: float, rate: int = RATE, seed: int = 0, pitch: float = 140.0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: deterministic and cheap, with speech-like spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = pitch * (1.0 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    noise = 0.01 * rng.standard_normal(t.size)
    return (0.2 * wave * envelope + noise).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dummy_model_dir(tmp_path_factory.mktemp("frontend") / "token2wav", "tiny", seed=0)


@pytest.fixture(scope="module")
def frontend(model_dir: Path) -> PromptFrontend:
    return PromptFrontend.from_dir(model_dir, cache_size=3)


@pytest.fixture()
def voice_wav(tmp_path: Path) -> Path:
    path = tmp_path / "voice.wav"
    soundfile.write(path, speechlike(3.0), RATE, subtype="PCM_16")
    return path


def test_features_have_the_documented_shapes(frontend: PromptFrontend, voice_wav: Path) -> None:
    voice = frontend.extract(voice_wav)
    tp = voice.num_tokens
    assert abs(tp - 3.0 * TOKEN_RATE) <= 1
    assert voice.prompt_tokens.shape == (1, tp) and voice.prompt_tokens.dtype == torch.int64
    assert 0 <= int(voice.prompt_tokens.min()) and int(voice.prompt_tokens.max()) <= 6560
    assert voice.spk_emb.shape == (1, 192) and voice.spk_emb.dtype == torch.float32
    assert voice.prompt_mel.shape == (1, 2 * tp, MEL_BINS) and voice.prompt_mel.dtype == torch.float32
    assert torch.isfinite(voice.prompt_mel).all() and torch.isfinite(voice.spk_emb).all()
    assert voice.duration_s == pytest.approx(3.0)


def test_default_voice_asset_is_small_24k_mono_pcm16(frontend: PromptFrontend) -> None:
    info = soundfile.info(str(DEFAULT_VOICE))
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
    assert 4.0 <= info.duration <= 6.0
    assert DEFAULT_VOICE.stat().st_size < 300_000
    voice = frontend.extract(DEFAULT_VOICE)
    assert voice.prompt_mel.shape[1] == 2 * voice.num_tokens


def test_cache_hit_returns_the_same_object_for_file_and_array(
    frontend: PromptFrontend, voice_wav: Path
) -> None:
    first = frontend.extract(voice_wav)
    assert frontend.extract(voice_wav) is first
    samples, rate = soundfile.read(voice_wav, dtype="float32")
    assert frontend.extract((samples, rate)) is first  # keyed by decoded PCM, not by path
    other = frontend.extract((speechlike(2.0, seed=1, pitch=200.0), RATE))
    assert other is not first and other.content_hash != first.content_hash


def test_cache_is_bounded_lru(model_dir: Path) -> None:
    small = PromptFrontend.from_dir(model_dir, cache_size=2)
    a = small.extract((speechlike(1.2, seed=1), RATE))
    b = small.extract((speechlike(1.2, seed=2), RATE))
    small.extract((speechlike(1.2, seed=1), RATE))  # touch a
    small.extract((speechlike(1.2, seed=3), RATE))  # evicts b
    assert small.cached_hashes()[0] == a.content_hash
    assert b.content_hash not in small.cached_hashes()


def test_other_sample_rates_are_resampled(frontend: PromptFrontend, tmp_path: Path) -> None:
    path = tmp_path / "voice44k.wav"
    soundfile.write(path, speechlike(2.0, rate=44_100), 44_100)
    voice = frontend.extract(path)
    assert abs(voice.num_tokens - 2.0 * TOKEN_RATE) <= 1
    assert voice.prompt_mel.shape[1] == 2 * voice.num_tokens


def test_stereo_tokens_use_channel_0_and_mel_uses_the_mean(frontend: PromptFrontend) -> None:
    left, right = speechlike(1.5, seed=4), speechlike(1.5, seed=5, pitch=220.0)
    stereo = frontend.extract((np.stack([left, right], axis=1), RATE))  # soundfile layout (frames, channels)
    mono_left = frontend.extract((left, RATE))
    assert torch.equal(stereo.prompt_tokens, mono_left.prompt_tokens)
    assert torch.equal(stereo.spk_emb, mono_left.spk_emb)
    mean_mel = prompt_mel_spectrogram(torch.from_numpy((left + right) / 2))
    expected = align_prompt_mel(mean_mel, stereo.num_tokens)
    torch.testing.assert_close(stereo.prompt_mel[0], expected, atol=1e-4, rtol=0)


def test_channels_first_and_int16_arrays_are_accepted(frontend: PromptFrontend) -> None:
    wave = speechlike(1.5, seed=6)
    pcm = (wave * 32767).astype(np.int16)
    as_int = read_prompt_audio((pcm[np.newaxis, :], RATE))
    assert as_int.samples.shape == (1, wave.size)
    np.testing.assert_allclose(as_int.samples[0], wave, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: (np.zeros(RATE * 2, dtype=np.float32), RATE), "silent"),
        (lambda: (speechlike(0.5), RATE), "too short"),
        (lambda: (speechlike(31.0), RATE), "too long"),
        (lambda: (np.full(RATE * 2, np.nan, dtype=np.float32), RATE), "NaN"),
        (lambda: (np.zeros((2, 2, 2), dtype=np.float32), RATE), "1-D or 2-D"),
        (lambda: (speechlike(2.0), 4000), "below"),
        (lambda: (speechlike(2.0), 24000.0), "must be an int"),
        (lambda: (np.array([], dtype=np.float32), RATE), "no audio"),
        (lambda: (np.array(["a", "b"]), RATE), "dtype"),
    ],
    ids=["silent", "short", "long", "nan", "3d", "low-rate", "float-rate", "empty", "strings"],
)
def test_bad_arrays_raise_voice_error(frontend: PromptFrontend, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VoiceError, match=message):
        frontend.extract(make())


def test_unreadable_and_missing_files_raise_voice_error(frontend: PromptFrontend, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file")
    with pytest.raises(VoiceError, match="cannot decode"):
        frontend.extract(garbage)
    with pytest.raises(VoiceError, match="no such file"):
        frontend.extract(tmp_path / "missing.wav")


def test_over_long_file_is_refused_from_its_header(frontend: PromptFrontend, tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(8000 * 31, dtype=np.int16), 8000)  # 31 s, refused before decoding
    with pytest.raises(VoiceError, match="too long"):
        frontend.extract(path)


def test_silent_file_is_rejected_even_when_long_enough(frontend: PromptFrontend, tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    soundfile.write(path, np.full(RATE * 3, 1e-5, dtype=np.float32), RATE)
    with pytest.raises(VoiceError, match="silent"):
        frontend.extract(path)


def test_prompt_mel_alignment_pads_and_truncates() -> None:
    mel = torch.arange(10 * MEL_BINS, dtype=torch.float32).reshape(10, MEL_BINS)
    longer = align_prompt_mel(mel, 4)
    assert torch.equal(longer, mel[:8])
    shorter = align_prompt_mel(mel, 7)
    assert shorter.shape == (14, MEL_BINS)
    assert torch.equal(shorter[:10], mel)
    assert torch.equal(shorter[10:], mel[-1:].expand(4, MEL_BINS))
    assert torch.equal(align_prompt_mel(mel, 5), mel)


def test_prompt_mel_frame_count_and_mel_basis() -> None:
    assert prompt_mel_spectrogram(torch.from_numpy(speechlike(1.0))).shape == (RATE // 480, MEL_BINS)
    ours = slaney_mel_basis(24_000, 1920, 80, 0.0, 8000.0)
    reference = audio_functional.melscale_fbanks(
        961, 0.0, 8000.0, 80, 24_000, norm="slaney", mel_scale="slaney"
    )
    torch.testing.assert_close(ours, reference.T, atol=1e-6, rtol=1e-4)


def test_speaker_fbank_is_mean_normalised_and_gain_invariant() -> None:
    wave = torch.from_numpy(speechlike(2.0, rate=16_000, seed=8))
    feats = speaker_fbank(wave)
    assert feats.shape[1] == 80
    assert float(feats.mean(dim=0).abs().max()) < 1e-4
    torch.testing.assert_close(speaker_fbank(wave * 0.5), feats, atol=2e-3, rtol=0)


def test_from_dir_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"campplus\.onnx|speech_tokenizer"):
        PromptFrontend.from_dir(tmp_path)
