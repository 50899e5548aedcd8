"""Audio helpers for the wire: PCM16 <-> float, G.711 u-law / A-law, resampling and delta slicing.

Numpy plus FFmpeg's libswresample (through PyAV) for resampling; functions are stateless and safe from any
thread, `StreamResampler` and `OutputEncoder` hold one stream's state. All PCM is mono, little-endian. G.711
runs at 8 kHz on the wire (`audio/pcmu`, `audio/pcma`); callers resample 24 kHz model audio first.
"""

from __future__ import annotations

import enum

import av
import numpy as np
import numpy.typing as npt

from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]

PCM_RATE = 24_000  # Hz: the model output and the protocol's only PCM rate (audio/pcm, pcm16)
PCM16_WIDTH = 2  # bytes per PCM16 sample
G711_WIDTH = 1  # bytes per G.711 sample
G711_SAMPLE_RATE = 8_000
INT16_SCALE = 32767.0  # float full scale -> int16 (symmetric, as Token2Wav does)
INT16_MIN, INT16_MAX = -32768, 32767
MIN_DELTA_MS = 20  # docs/PROTOCOL.md §7.2: deltas are 20-100 ms
MAX_DELTA_MS = 100

# G.711 constants (ITU-T G.711, as in the classic Sun reference implementation).
_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_XOR = 0x55
_SEG_COUNT = 8

_AV_FLOAT = "flt"  # PyAV sample format: packed float32
_AV_MONO = "mono"


class AudioFormat(enum.Enum):
    """Wire audio formats; the value is the beta name."""

    PCM16 = "pcm16"
    G711_ULAW = "g711_ulaw"
    G711_ALAW = "g711_alaw"

    @property
    def sample_rate(self) -> int:
        """Samples per second on the wire."""
        return PCM_RATE if self is AudioFormat.PCM16 else G711_SAMPLE_RATE

    @property
    def bytes_per_sample(self) -> int:
        """2 for PCM16, 1 for G.711."""
        return PCM16_WIDTH if self is AudioFormat.PCM16 else G711_WIDTH

    @property
    def ga_type(self) -> str:
        """The GA ``format.type``."""
        return _GA_TYPES[self]

    @classmethod
    def from_ga_type(cls, ga_type: str | None) -> AudioFormat:
        """Parse a GA ``format.type`` (a missing type means PCM)."""
        for fmt, name in _GA_TYPES.items():
            if name == (ga_type or "audio/pcm"):
                return fmt
        raise ValueError(ga_type)


_GA_TYPES = {
    AudioFormat.PCM16: "audio/pcm",
    AudioFormat.G711_ULAW: "audio/pcmu",
    AudioFormat.G711_ALAW: "audio/pcma",
}


def pcm16_to_float(pcm: bytes) -> Float32Array:
    """Little-endian PCM16 bytes -> float32 samples in [-1, 1).

    Raises:
        ValueError: odd byte count.
    """
    if len(pcm) % PCM16_WIDTH:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(INT16_MAX + 1)


def float_to_int16(samples: npt.NDArray[np.floating]) -> Int16Array:
    """Float -> int16: clip to [-1, 1], scale by 32767, round toward zero (docs/TOKEN2WAV.md §5.4)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * np.float32(INT16_SCALE)).astype(np.int16)


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> bytes:
    """Float samples -> little-endian PCM16 bytes."""
    return float_to_int16(samples).astype("<i2").tobytes()


def int16_to_pcm16(samples: npt.NDArray[np.integer]) -> bytes:
    """int16 samples (any integer array within range) -> little-endian PCM16 bytes."""
    return np.asarray(samples).astype("<i2").tobytes()


def pcm16_to_int16(pcm: bytes) -> Int16Array:
    """Little-endian PCM16 bytes -> int16 samples (native order).

    Raises:
        ValueError: odd byte count.
    """
    if len(pcm) % PCM16_WIDTH:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    # Works on the 14-bit magnitude (floor shift), like the reference implementation, so negative values
    # round the same way as every other G.711 codec.
    q = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int32) >> 2
    mask = np.where(q < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(q < 0, -q, q), _ULAW_CLIP >> 2) + (_ULAW_BIAS >> 2)
    seg_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
    seg = np.searchsorted(seg_ends, mag, side="left")
    mantissa = (mag >> (seg + 1)) & 0x0F
    code: npt.NDArray[np.int64] = ((seg << 4) | mantissa) ^ mask
    return code.astype(np.uint8)


def _build_ulaw_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int32)
    mask = np.where(x >= 0, 0xD5, _ALAW_XOR)
    mag = np.where(x >= 0, x, -x - 1) >> 3  # 13-bit magnitude
    seg_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
    seg = np.searchsorted(seg_ends, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, _SEG_COUNT - 1) << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= _SEG_COUNT, 0x7F, aval)
    code: npt.NDArray[np.int64] = (aval ^ mask) & 0xFF
    return code.astype(np.uint8)


def _build_alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ _ALAW_XOR
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


# int16 value + 32768 -> code byte; code byte -> int16 value.
_ULAW_ENCODE = _build_ulaw_encode_table()
_ULAW_DECODE = _build_ulaw_decode_table()
_ALAW_ENCODE = _build_alaw_encode_table()
_ALAW_DECODE = _build_alaw_decode_table()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """PCM16 bytes -> G.711 u-law bytes (one byte per sample, same rate)."""
    return _ULAW_ENCODE[pcm16_to_int16(pcm).astype(np.int32) + (INT16_MAX + 1)].tobytes()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 u-law bytes -> PCM16 bytes (same rate)."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """PCM16 bytes -> G.711 A-law bytes (one byte per sample, same rate)."""
    return _ALAW_ENCODE[pcm16_to_int16(pcm).astype(np.int32) + (INT16_MAX + 1)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """G.711 A-law bytes -> PCM16 bytes (same rate)."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def wire_to_pcm16(data: bytes, fmt: AudioFormat, param: str) -> bytes:
    """Wire audio -> PCM16 LE at the format's rate.

    Raises:
        ProtocolViolation: PCM16 with an odd number of bytes.
    """
    if fmt is AudioFormat.PCM16:
        if len(data) % 2:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value: audio must be whole 16-bit samples; got {len(data)} bytes (an odd number).",
                param,
            )
        return data
    return ulaw_to_pcm16(data) if fmt is AudioFormat.G711_ULAW else alaw_to_pcm16(data)


def resample(samples: npt.NDArray[np.floating], src_rate: int, dst_rate: int) -> Float32Array:
    """Band-limited resampling of a whole float mono signal (FFmpeg's libswresample through PyAV).

    Output length is ``round(len(samples) * dst_rate / src_rate)`` (libswresample keeps the output clock
    exact and flushes its filter tail at the end). When downsampling, content above the destination Nyquist
    is filtered out instead of aliased. For audio that arrives in pieces use `StreamResampler`, which gives
    the same samples without edge effects at the piece boundaries.

    Args:
        samples: float audio, shape [n].
        src_rate: input rate in Hz.
        dst_rate: output rate in Hz.
    """
    resampler = StreamResampler(src_rate, dst_rate)
    head = resampler.process(samples)
    return np.concatenate([head, resampler.flush()])


class StreamResampler:
    """Incremental `resample`: feed pieces, get every output sample the filter has completed.

    One resampler for the whole project (G.711 output, VAD input, the SGLang prompt builder, the HTTP
    encoders): libswresample is FFmpeg's, maintained and tested far beyond what a hand-written polyphase
    filter here could be, and PyAV already ships it for the audio codecs. Concatenating ``process`` outputs
    and ``flush`` equals `resample` of the concatenated input; the output lags the input by the filter's
    group delay (a few ms) until `flush`. Not thread-safe; one per audio stream.

    Args:
        src_rate: input rate in Hz.
        dst_rate: output rate in Hz.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._resampler = av.AudioResampler(format=_AV_FLOAT, layout=_AV_MONO, rate=dst_rate)
        self._received = 0  # source samples fed
        self._emitted = 0  # output samples returned
        self._flushed = False

    def process(self, samples: npt.NDArray[np.floating]) -> Float32Array:
        """Add source samples; return the output samples that are now complete."""
        if self._flushed:
            raise RuntimeError("process() after flush()")
        x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(1, -1))  # [1 channel, n]
        if x.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(x, format=_AV_FLOAT, layout=_AV_MONO)
        frame.sample_rate = self.src_rate
        self._received += x.shape[1]
        out = _frames_to_float(self._resampler.resample(frame))
        self._emitted += out.size
        return out

    def flush(self) -> Float32Array:
        """End of input: return the remaining output samples (the filter's tail)."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        tail = _frames_to_float(self._resampler.resample(None))
        # libswresample swallows inputs shorter than its filter delay (a few dozen samples) and may end one
        # sample off the exact clock; settle the total on round(n * dst / src) so lengths are predictable.
        missing = round(self._received * self.dst_rate / self.src_rate) - self._emitted - tail.size
        if missing > 0:
            tail = np.concatenate([tail, np.zeros(missing, dtype=np.float32)])
        elif missing < 0:
            tail = tail[: max(0, tail.size + missing)]
        self._emitted += tail.size
        return tail


def _frames_to_float(frames: list[av.AudioFrame]) -> Float32Array:
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.float32, copy=False)


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """`resample` on PCM16 bytes."""
    if src_rate == dst_rate:
        return pcm
    return float_to_pcm16(resample(pcm16_to_float(pcm), src_rate, dst_rate))


def encode_output(pcm16: bytes, fmt: AudioFormat, sample_rate: int) -> bytes:
    """Model PCM16 at ``sample_rate`` -> the session's output format, for one self-contained clip.

    G.711 is resampled to 8 kHz. For a stream of chunks use `OutputEncoder`, which resamples across chunk
    boundaries (this function treats each call as a separate clip, with silence around it).
    """
    encoder = OutputEncoder(fmt, sample_rate)
    return encoder.encode(pcm16) + encoder.flush()


class OutputEncoder:
    """Streams model PCM16 into a session's output format (one per response).

    Attributes:
        fmt: the wire format.
        sample_rate: rate of the encoded bytes (24 kHz PCM, 8 kHz G.711).
        sample_width: bytes per encoded sample (2 or 1).
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.fmt = fmt
        self._resampler = None if fmt is AudioFormat.PCM16 else StreamResampler(sample_rate, G711_SAMPLE_RATE)
        self.sample_rate = sample_rate if fmt is AudioFormat.PCM16 else G711_SAMPLE_RATE
        self.sample_width = fmt.bytes_per_sample

    def encode(self, pcm16: bytes) -> bytes:
        """Encode one chunk; G.711 output lags by the resampler's 2 ms until `flush`."""
        if self._resampler is None:
            return pcm16
        return self._companded(self._resampler.process(pcm16_to_float(pcm16)))

    def flush(self) -> bytes:
        """End of the audio: the samples still held by the resampler (empty for PCM16)."""
        if self._resampler is None:
            return b""
        return self._companded(self._resampler.flush())

    def _companded(self, samples: Float32Array) -> bytes:
        narrow = float_to_pcm16(samples)
        return pcm16_to_ulaw(narrow) if self.fmt is AudioFormat.G711_ULAW else pcm16_to_alaw(narrow)


def slice_pcm(
    pcm: bytes, sample_rate: int, max_ms: int = MAX_DELTA_MS, *, sample_width: int = PCM16_WIDTH
) -> list[bytes]:
    """Split one decoded chunk into near-equal pieces of at most ``max_ms`` for ``output_audio.delta``.

    Pieces never split a sample. A chunk shorter than ``max_ms`` stays whole; a longer one is cut into
    ``ceil(duration / max_ms)`` pieces of equal length (+-1 sample), so with ``max_ms >= 2 * 20`` no piece of
    a long chunk is shorter than 20 ms.

    Args:
        pcm: audio bytes (PCM16 by default; pass ``sample_width=1`` for G.711).
        sample_rate: samples per second of ``pcm``.
        max_ms: longest piece in milliseconds (20..100 on the wire).
        sample_width: bytes per sample.

    Raises:
        ValueError: ``pcm`` is not a whole number of samples, or ``max_ms`` is not positive.
    """
    if max_ms <= 0:
        raise ValueError("max_ms must be positive")
    if len(pcm) % sample_width:
        raise ValueError(f"{len(pcm)} bytes is not a whole number of {sample_width}-byte samples")
    n = len(pcm) // sample_width
    if n == 0:
        return []
    max_samples = max(1, sample_rate * max_ms // 1000)
    pieces = -(-n // max_samples)  # ceil
    bounds = [(i * n // pieces) * sample_width for i in range(pieces + 1)]
    return [pcm[bounds[i] : bounds[i + 1]] for i in range(pieces)]
