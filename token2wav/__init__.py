"""token2wav: Step-Audio-2 audio codes -> 24 kHz speech, offline and streaming (Contract 2).

Public API::

    from token2wav import Token2Wav, ChunkSchedule
    t2w = Token2Wav.from_dir("Step-Audio-2-mini/token2wav", device="cpu")
    voice = t2w.load_voice("prompt.wav")
    stream = t2w.start(voice)                 # first hop 10 codes, then 25
    pcm_chunks = t2w.push(stream, codes)      # int16 chunks, as soon as they are final
    pcm_chunks += t2w.finish(stream)
"""

from __future__ import annotations

from token2wav.dummy import make_dummy_model_dir
from token2wav.errors import (
    ConfigError,
    InvalidCodes,
    ModelLoadError,
    StreamError,
    Token2WavError,
    VoiceError,
)
from token2wav.model import Token2Wav, Voice
from token2wav.stream import ChunkSchedule, Token2WavStream

__all__ = [
    "ChunkSchedule",
    "ConfigError",
    "InvalidCodes",
    "ModelLoadError",
    "StreamError",
    "Token2Wav",
    "Token2WavError",
    "Token2WavStream",
    "Voice",
    "VoiceError",
    "make_dummy_model_dir",
]
