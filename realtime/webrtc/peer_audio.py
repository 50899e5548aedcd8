"""The peer's audio track of a call, as the session's input audio: decoded Opus -> 24 kHz mono PCM16.

aiortc decodes the peer's Opus packets (in its decoder thread) into 48 kHz stereo PCM16 frames of 20 ms.
`pump_peer_audio` takes them off the track, mixes them to mono, resamples them to the protocol's 24 kHz with
the project's `StreamResampler` (FFmpeg's libswresample) and hands them on in pieces of `BATCH_MS`, each a
`PeerAudio` the session treats as an ``input_audio_buffer.append`` (converted to its input format, fed to the
buffer and the server VAD). Batching keeps the VAD thread's hops at 25 per second per call instead of 50.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio import PCM16_WIDTH, PCM_RATE, Float32Array, StreamResampler, float_to_pcm16

BATCH_MS = 40
BATCH_BYTES = PCM_RATE * PCM16_WIDTH * BATCH_MS // 1000
_INT16_FULL_SCALE = 32768.0


def frame_to_mono(frame: av.AudioFrame) -> Float32Array:
    """One decoded frame as float mono samples in [-1, 1) (channels averaged).

    Raises:
        ValueError: a sample format other than packed or planar signed 16-bit (aiortc's decoders give s16).
    """
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"unexpected sample format {frame.format.name}")
    channels = len(frame.layout.channels)
    samples: Float32Array = frame.to_ndarray().astype(np.float32) / np.float32(_INT16_FULL_SCALE)
    if frame.format.is_planar:  # [channels, n]
        mono: Float32Array = samples.mean(axis=0, dtype=np.float32)
    else:  # [1, n * channels], interleaved
        mono = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return mono


async def pump_peer_audio(track: MediaStreamTrack, deliver: Callable[[bytes], Awaitable[None]]) -> None:
    """Read ``track`` until it ends, delivering 24 kHz mono PCM16 in pieces of `BATCH_MS` (the rest at the end).

    Args:
        track: the peer's audio track (aiortc's remote track).
        deliver: awaited with each piece; its waiting is the backpressure on the track.
    """
    resampler: StreamResampler | None = None
    pending = bytearray()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            break
        if not isinstance(frame, av.AudioFrame):
            continue
        if resampler is None or resampler.src_rate != frame.sample_rate:
            resampler = StreamResampler(frame.sample_rate, PCM_RATE)
        pending += float_to_pcm16(resampler.process(frame_to_mono(frame)))
        if len(pending) >= BATCH_BYTES:
            await deliver(bytes(pending))
            pending.clear()
    if pending:
        await deliver(bytes(pending))
