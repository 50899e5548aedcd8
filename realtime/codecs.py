"""Streaming audio encoders and decoders for the HTTP audio endpoints (FFmpeg through PyAV).

`StreamEncoder` turns the model's 24 kHz mono PCM16, chunk by chunk as the decoder produces it, into the bytes
of one response in an OpenAI ``response_format``: each `encode` returns the bytes that are final now, so a
response can be sent while it is still being generated. Concatenating every `encode` result and `finish` gives
a complete, decodable stream:

=========  ==============================================================================================
``pcm``    raw 24 kHz mono PCM16 little-endian, passed through
``wav``    a 44-byte RIFF header whose sizes say "unknown length" (0xFFFFFFFF), then PCM16 as it comes
``mp3``    MPEG-2 layer III (LAME) at 24 kHz
``opus``   Ogg Opus; the codec runs at 48 kHz (the library resamples), 20 ms Ogg pages
``aac``    ADTS AAC-LC at 24 kHz (self-framed, no container index needed)
``flac``   FLAC at 24 kHz (the stream header is written first; its totals stay unknown, as in any live FLAC)
=========  ==============================================================================================

``speed`` other than 1 runs the PCM through FFmpeg's ``atempo`` filter (tempo change without pitch change)
before encoding. `decode_audio` reads any file FFmpeg reads into mono PCM16 at a chosen rate (uploads,
``input_audio`` parts).

Encoders and decoders are CPU work: call them off the event loop. Not thread-safe; one encoder per response.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass

import av
import av.filter
import numpy as np

from realtime.audio import PCM16_WIDTH, PCM_RATE

MIN_SPEED = 0.25
MAX_SPEED = 4.0
_ATEMPO_MIN = 0.5  # one atempo instance covers 0.5..100; slower tempos chain several
_OGG_PAGE_MICROSECONDS = "20000"  # flush an Ogg page every 20 ms instead of FFmpeg's default 1 s
_S16 = "s16"
_MONO = "mono"
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF
_WAV_HEADER_BYTES = 44
_PCM_FORMAT_TAG = 1


class SpeechFormat(enum.Enum):
    """OpenAI ``response_format`` values; the value is the wire name."""

    MP3 = "mp3"
    OPUS = "opus"
    AAC = "aac"
    FLAC = "flac"
    WAV = "wav"
    PCM = "pcm"

    @property
    def media_type(self) -> str:
        """The ``Content-Type`` of a response in this format."""
        return _MEDIA_TYPES[self]

    @property
    def encoded_rate(self) -> int:
        """Sample rate inside the encoded stream (Opus always runs at 48 kHz)."""
        return _OPUS_RATE if self is SpeechFormat.OPUS else PCM_RATE


_OPUS_RATE = 48_000


@dataclass(frozen=True)
class _Container:
    muxer: str
    codec: str
    options: dict[str, str]


_CONTAINERS = {
    SpeechFormat.MP3: _Container("mp3", "libmp3lame", {"write_xing": "0"}),
    SpeechFormat.OPUS: _Container("ogg", "libopus", {"page_duration": _OGG_PAGE_MICROSECONDS}),
    SpeechFormat.AAC: _Container("adts", "aac", {}),
    SpeechFormat.FLAC: _Container("flac", "flac", {}),
}
_MEDIA_TYPES = {
    SpeechFormat.MP3: "audio/mpeg",
    SpeechFormat.OPUS: "audio/ogg",
    SpeechFormat.AAC: "audio/aac",
    SpeechFormat.FLAC: "audio/flac",
    SpeechFormat.WAV: "audio/wav",
    SpeechFormat.PCM: "audio/pcm",
}


class _ByteSink(io.RawIOBase):
    """A write-only, non-seekable file for a muxer: collects bytes until `take` (so muxers never seek back)."""

    def __init__(self) -> None:
        super().__init__()
        self._data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._data += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


def wav_stream_header(sample_rate: int = PCM_RATE) -> bytes:
    """A PCM16 mono RIFF/WAVE header for a stream of unknown length (both sizes 0xFFFFFFFF, as live WAV does)."""
    byte_rate = sample_rate * PCM16_WIDTH
    return (
        b"RIFF"
        + struct.pack("<I", _WAV_UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, _PCM_FORMAT_TAG, 1, sample_rate, byte_rate, PCM16_WIDTH, 16)
        + b"data"
        + struct.pack("<I", _WAV_UNKNOWN_SIZE)
    )


class _Tempo:
    """FFmpeg ``atempo`` on a PCM16 stream: same pitch, ``speed`` times faster."""

    def __init__(self, speed: float, sample_rate: int) -> None:
        self._graph = av.filter.Graph()
        src = self._graph.add_abuffer(format=_S16, sample_rate=sample_rate, layout=_MONO)
        node = src
        remaining = speed
        while remaining < _ATEMPO_MIN:  # e.g. 0.25 = 0.5 * 0.5
            step = self._graph.add("atempo", str(_ATEMPO_MIN))
            node.link_to(step)
            node, remaining = step, remaining / _ATEMPO_MIN
        last = self._graph.add("atempo", f"{remaining:.6f}")
        node.link_to(last)
        sink = self._graph.add("abuffersink")
        last.link_to(sink)
        self._graph.configure()
        self._rate = sample_rate
        self._pts = 0

    def push(self, pcm16: bytes) -> list[av.AudioFrame]:
        frame = _pcm_frame(pcm16, self._rate)
        frame.pts = self._pts
        self._pts += frame.samples
        self._graph.push(frame)
        return self._drain()

    def finish(self) -> list[av.AudioFrame]:
        self._graph.push(None)
        return self._drain()

    def _drain(self) -> list[av.AudioFrame]:
        frames: list[av.AudioFrame] = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return frames
            assert isinstance(frame, av.AudioFrame), "an audio graph yields audio frames"
            frames.append(frame)


def _pcm_frame(pcm16: bytes, sample_rate: int) -> av.AudioFrame:
    samples = np.frombuffer(pcm16, dtype="<i2").reshape(1, -1)  # [1 channel, n]
    frame = av.AudioFrame.from_ndarray(samples, format=_S16, layout=_MONO)
    frame.sample_rate = sample_rate
    return frame


def _frame_pcm16(frame: av.AudioFrame) -> bytes:
    return bytes(frame.to_ndarray().astype("<i2").reshape(-1).tobytes())


class StreamEncoder:
    """One response's encoder: model PCM16 in (any chunking), bytes of ``fmt`` out as soon as they are final.

    Args:
        fmt: the output format.
        speed: playback speed, ``MIN_SPEED``..``MAX_SPEED`` (1.0 = as generated).
        sample_rate: rate of the PCM fed in (the model's 24 kHz).

    Raises:
        ValueError: ``speed`` out of range.
    """

    def __init__(self, fmt: SpeechFormat, *, speed: float = 1.0, sample_rate: int = PCM_RATE) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be in [{MIN_SPEED}, {MAX_SPEED}]")
        self.fmt = fmt
        self._rate = sample_rate
        self._tempo = _Tempo(speed, sample_rate) if speed != 1.0 else None
        self._header = wav_stream_header(sample_rate) if fmt is SpeechFormat.WAV else b""
        self._sink: _ByteSink | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.AudioStream | None = None
        spec = _CONTAINERS.get(fmt)
        if spec is not None:
            self._sink = _ByteSink()
            self._container = av.open(self._sink, "w", format=spec.muxer, options=spec.options)
            rate = fmt.encoded_rate
            stream = self._container.add_stream(spec.codec, rate=rate, layout=_MONO)  # type: ignore[call-overload]
            assert isinstance(stream, av.AudioStream), "an audio codec gives an audio stream"
            self._stream = stream
        self._finished = False

    def encode(self, pcm16: bytes) -> bytes:
        """Add model PCM16 (whole samples); return the encoded bytes that are final now (possibly empty)."""
        if self._finished:
            raise RuntimeError("encode() after finish()")
        if not pcm16:
            return self._take_header()
        if self._tempo is None:
            return self._take_header() + self._encode_frames([_pcm_frame(pcm16, self._rate)])
        return self._take_header() + self._encode_frames(self._tempo.push(pcm16))

    def finish(self) -> bytes:
        """End of the audio: flush the tempo filter, the codec and the container; return the last bytes."""
        if self._finished:
            return b""
        self._finished = True
        out = self._take_header()
        if self._tempo is not None:
            out += self._encode_frames(self._tempo.finish())
        if self._container is None or self._stream is None or self._sink is None:
            return out
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return out + self._sink.take()

    def _take_header(self) -> bytes:
        header, self._header = self._header, b""
        return header

    def _encode_frames(self, frames: list[av.AudioFrame]) -> bytes:
        if self._container is None or self._stream is None or self._sink is None:
            return b"".join(_frame_pcm16(frame) for frame in frames)
        for frame in frames:
            frame.pts = None  # the encoder's own resampler and frame-size buffer assign timestamps
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()


class UndecodableAudio(ValueError):
    """The bytes are not audio FFmpeg can read (or hold no audio stream)."""


class AudioTooLong(UndecodableAudio):
    """The audio is longer than the caller's limit (found while decoding, so memory stays bounded)."""


def decode_audio(data: bytes, sample_rate: int, *, max_seconds: float) -> tuple[bytes, int]:
    """Any audio file FFmpeg reads -> (mono PCM16 at ``sample_rate``, the file's own sample rate).

    Args:
        data: the file's bytes.
        sample_rate: output rate in Hz.
        max_seconds: decoding stops with `UndecodableAudio` past this much audio (bounds memory and CPU).

    Raises:
        UndecodableAudio: not a readable audio file, no audio stream, or longer than ``max_seconds``.
    """
    limit = int(max_seconds * sample_rate)
    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file has no audio stream")
            stream = container.streams.audio[0]
            source_rate = int(stream.codec_context.sample_rate or 0)
            resampler = av.AudioResampler(format=_S16, layout=_MONO, rate=sample_rate)
            pieces: list[bytes] = []
            total = 0
            for frame in container.decode(stream):
                source_rate = source_rate or int(frame.sample_rate)
                for out in resampler.resample(frame):
                    pieces.append(_frame_pcm16(out))
                    total += out.samples
                if total > limit:
                    raise AudioTooLong(f"the audio is longer than {max_seconds:g} seconds")
            for out in resampler.resample(None):
                pieces.append(_frame_pcm16(out))
    except UndecodableAudio:
        raise
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise UndecodableAudio(f"the audio could not be decoded ({type(exc).__name__})") from None
    return b"".join(pieces), source_rate
