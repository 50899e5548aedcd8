"""The streaming encoders: any chunking gives a decodable stream of the right rate and length; tempo; decoding."""

from __future__ import annotations

import io
import itertools
import struct

import av
import numpy as np
import pytest

from realtime.codecs import SpeechFormat, StreamEncoder, UndecodableAudio, decode_audio, wav_stream_header

RATE = 24_000
# priming/padding a decoder cannot trim without a seekable header, plus one codec frame (samples at 24 kHz)
TOLERANCE = {"mp3": 1105 + 576, "aac": 1024 + 1024, "opus": 480, "flac": 0, "wav": 0, "pcm": 0}


def _pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return bytes((0.3 * 32767 * np.sin(2 * np.pi * 330 * t)).astype("<i2").tobytes())


def _encode(fmt: SpeechFormat, pcm: bytes, cuts: list[int], speed: float = 1.0) -> tuple[bytes, list[bytes]]:
    encoder = StreamEncoder(fmt, speed=speed)
    bounds = [0, *cuts, len(pcm)]
    pieces = [encoder.encode(pcm[a:b]) for a, b in itertools.pairwise(bounds)]
    pieces.append(encoder.finish())
    return b"".join(pieces), pieces


def _decoded(data: bytes, fmt: SpeechFormat) -> tuple[int, int]:
    if fmt is SpeechFormat.PCM:
        return len(data) // 2, RATE
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames), frames[0].sample_rate


@pytest.mark.parametrize("fmt", list(SpeechFormat), ids=lambda f: f.value)
@pytest.mark.parametrize("cuts", [[], [2], [4800, 4802, 30_000], list(range(960, 96_000, 9_600))])
def test_any_chunking_decodes_to_the_input_length(fmt: SpeechFormat, cuts: list[int]) -> None:
    pcm = _pcm(2.0)
    data, _ = _encode(fmt, pcm, cuts)
    samples, rate = _decoded(data, fmt)
    assert rate == fmt.encoded_rate
    expected = len(pcm) // 2 * rate // RATE
    assert abs(samples - expected) <= TOLERANCE[fmt.value] * rate // RATE


@pytest.mark.parametrize("fmt", [SpeechFormat.MP3, SpeechFormat.OPUS, SpeechFormat.AAC, SpeechFormat.FLAC])
def test_bytes_come_out_while_audio_goes_in(fmt: SpeechFormat) -> None:
    _, pieces = _encode(fmt, _pcm(2.0), list(range(4800, 48_000 * 2, 4800)))  # 100 ms chunks
    assert sum(1 for piece in pieces[:-1] if piece) >= len(pieces) // 2  # not everything at finish()


def test_wav_header_says_unknown_length() -> None:
    header = wav_stream_header()
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", header[4:8])[0] == struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    data, pieces = _encode(SpeechFormat.WAV, _pcm(0.5), [1000])
    assert pieces[0].startswith(header) and data[44:] == _pcm(0.5)


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_speed_scales_the_duration(speed: float) -> None:
    data, _ = _encode(SpeechFormat.PCM, _pcm(2.0), [12_000, 50_000], speed=speed)
    assert len(data) // 2 == pytest.approx(2.0 * RATE / speed, rel=0.02)


@pytest.mark.parametrize("speed", [0.2, 4.01])
def test_speed_out_of_range(speed: float) -> None:
    with pytest.raises(ValueError):
        StreamEncoder(SpeechFormat.MP3, speed=speed)


def test_encode_after_finish_raises() -> None:
    encoder = StreamEncoder(SpeechFormat.MP3)
    encoder.finish()
    assert encoder.finish() == b""
    with pytest.raises(RuntimeError):
        encoder.encode(_pcm(0.1))


def test_decode_audio_resamples_and_refuses_garbage_and_overlong_input() -> None:
    data, _ = _encode(SpeechFormat.FLAC, _pcm(1.0), [])
    pcm, source_rate = decode_audio(data, 16_000, max_seconds=5)
    assert source_rate == RATE and len(pcm) // 2 == pytest.approx(16_000, abs=2)
    with pytest.raises(UndecodableAudio):
        decode_audio(b"definitely not audio", 16_000, max_seconds=5)
    with pytest.raises(UndecodableAudio):
        decode_audio(data, 16_000, max_seconds=0.5)
