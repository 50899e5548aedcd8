"""PCM16 / float conversion, G.711 tables, resampling and delta slicing."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from realtime import audio

ALL_INT16 = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def _audioop() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop is not available on this Python")


def test_ulaw_matches_the_stdlib_reference_on_every_value() -> None:
    ref = _audioop()
    assert audio.pcm16_to_ulaw(ALL_INT16) == ref.lin2ulaw(ALL_INT16, 2)  # type: ignore[attr-defined]
    assert audio.ulaw_to_pcm16(ALL_CODES) == ref.ulaw2lin(ALL_CODES, 2)  # type: ignore[attr-defined]


def test_alaw_matches_the_stdlib_reference_on_every_value() -> None:
    ref = _audioop()
    assert audio.pcm16_to_alaw(ALL_INT16) == ref.lin2alaw(ALL_INT16, 2)  # type: ignore[attr-defined]
    assert audio.alaw_to_pcm16(ALL_CODES) == ref.alaw2lin(ALL_CODES, 2)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(audio.pcm16_to_ulaw, audio.ulaw_to_pcm16), (audio.pcm16_to_alaw, audio.alaw_to_pcm16)],
)
def test_g711_round_trip_is_stable(encode: object, decode: object) -> None:
    # decode(encode(decode(c))) == decode(c): every code is a fixed point of the quantiser
    decoded = decode(ALL_CODES)  # type: ignore[operator]
    assert decode(encode(decoded)) == decoded  # type: ignore[operator]
    assert len(encode(b"\x00\x01" * 10)) == 10  # type: ignore[operator]


def test_pcm16_float_round_trip() -> None:
    values = np.array([-32768, -1, 0, 1, 12345, 32767], dtype="<i2")
    floats = audio.pcm16_to_float(values.tobytes())
    assert floats.dtype == np.float32
    assert floats.min() >= -1.0 and floats.max() < 1.0
    assert audio.float_to_int16(np.array([2.0, -2.0, 0.5])).tolist() == [32767, -32767, 16383]
    assert audio.pcm16_to_int16(audio.int16_to_pcm16(values)).tolist() == values.tolist()


def test_odd_byte_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        audio.pcm16_to_float(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="whole number"):
        audio.slice_pcm(b"\x00\x01\x02", 24_000)


@pytest.mark.parametrize("samples", [0, 1, 479, 480, 2400, 2401, 5760, 20160, 24000])
def test_slices_are_whole_samples_within_bounds_and_lossless(samples: int) -> None:
    pcm = np.arange(samples, dtype="<i2").tobytes()
    pieces = audio.slice_pcm(pcm, 24_000, 100)
    assert b"".join(pieces) == pcm
    assert all(len(p) % 2 == 0 and 0 < len(p) <= 4800 for p in pieces)
    if samples >= 4800:  # a long chunk never leaves a sliver: every piece is >= 20 ms
        assert all(len(p) >= 960 for p in pieces)


def test_g711_slices_use_one_byte_samples() -> None:
    pieces = audio.slice_pcm(bytes(1000), 8_000, 40, sample_width=1)
    assert all(len(p) <= 320 for p in pieces) and sum(map(len, pieces)) == 1000


def _tone(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("src", "dst"), [(24_000, 16_000), (16_000, 24_000), (24_000, 8_000), (44_100, 24_000)]
)
def test_resample_keeps_an_in_band_tone(src: int, dst: int) -> None:
    out = audio.resample(_tone(440.0, src), src, dst)
    expected = _tone(440.0, dst)
    assert out.size == expected.size
    edge = 64  # ignore the zero-padded borders
    assert np.max(np.abs(out[edge:-edge] - expected[edge:-edge])) < 0.01


def test_downsampling_attenuates_content_above_the_new_nyquist() -> None:
    out = audio.resample(_tone(6_000.0, 24_000), 24_000, 8_000)  # 6 kHz > 4 kHz Nyquist
    assert np.sqrt(np.mean(out[64:-64] ** 2)) < 0.02


def test_encode_output_formats() -> None:
    pcm = audio.float_to_pcm16(_tone(300.0, 24_000, 0.1))  # 2400 samples
    assert audio.encode_output(pcm, audio.AudioFormat.PCM16, 24_000) == pcm
    ulaw = audio.encode_output(pcm, audio.AudioFormat.G711_ULAW, 24_000)
    alaw = audio.encode_output(pcm, audio.AudioFormat.G711_ALAW, 24_000)
    assert len(ulaw) == len(alaw) == 800  # 100 ms at 8 kHz, one byte per sample
    assert len(pcm) / (audio.PCM16_WIDTH * 24_000) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("src", "dst"), [(24_000, 8_000), (24_000, 16_000), (16_000, 24_000), (44_100, 24_000)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_resampler_equals_whole_signal_resampling(src: int, dst: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    signal = rng.uniform(-0.5, 0.5, 5000).astype(np.float32)
    cuts = np.sort(rng.integers(0, signal.size, 6))
    resampler = audio.StreamResampler(src, dst)
    pieces = [resampler.process(part) for part in np.split(signal, cuts)]
    pieces.append(resampler.flush())
    np.testing.assert_allclose(np.concatenate(pieces), audio.resample(signal, src, dst), atol=1e-6)
    with pytest.raises(RuntimeError):
        resampler.process(signal)


@pytest.mark.parametrize("fmt", list(audio.AudioFormat))
def test_output_encoder_across_chunks_equals_one_clip(fmt: audio.AudioFormat) -> None:
    pcm = audio.float_to_pcm16(_tone(300.0, 24_000, 0.3))
    chunks = [pcm[:1920], pcm[1920:7680], pcm[7680:]]  # boundaries at 40 ms and 160 ms
    encoder = audio.OutputEncoder(fmt, 24_000)
    streamed = b"".join(encoder.encode(c) for c in chunks) + encoder.flush()
    assert streamed == audio.encode_output(pcm, fmt, 24_000)
    assert len(streamed) == (len(pcm) if fmt is audio.AudioFormat.PCM16 else len(pcm) // 6)
    assert encoder.sample_rate == (24_000 if fmt is audio.AudioFormat.PCM16 else 8_000)


@pytest.mark.parametrize(
    ("src", "dst"), [(24_000, 8_000), (24_000, 16_000), (16_000, 24_000), (44_100, 24_000)]
)
@pytest.mark.parametrize("n", [1, 17, 999, 4_800, 44_101])
def test_resampled_length_is_the_exact_rate_ratio(src: int, dst: int, n: int) -> None:
    out = audio.resample(np.zeros(n, dtype=np.float32), src, dst)
    assert out.size == round(n * dst / src)  # the exact clock, even for inputs shorter than the filter
