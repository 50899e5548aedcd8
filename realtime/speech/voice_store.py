"""Uploaded voices on disk: validation of a prompt recording, and the folder that keeps them across restarts.

An upload is any audio file FFmpeg reads. It is accepted when it is a usable Token2Wav prompt: at least
`MIN_SOURCE_RATE` Hz, `MIN_SECONDS`..`MAX_SECONDS` long, and not silent (RMS above `MIN_LEVEL_DBFS`). It is
stored as a 24 kHz mono PCM16 WAV named ``<name>.wav`` in one folder (``<cache_dir>/voices``); names are
checked against `NAME_PATTERN`, so nothing is ever written outside that folder. Files are written to a
temporary name and renamed, so a crash never leaves a half-written voice that a restart would load.

Decoding and file I/O block: call these functions off the event loop.
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.audio import PCM16_WIDTH, PCM_RATE, pcm16_to_float
from realtime.codecs import UndecodableAudio, decode_audio

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MIN_SECONDS = 1.0
MAX_SECONDS = 30.0  # Token2Wav primes its caches on the whole prompt: longer prompts cost memory per stream
MIN_SOURCE_RATE = 16_000  # the speaker encoder and tokenizer work at 16 kHz
MIN_LEVEL_DBFS = -50.0  # quieter than this is silence, not a voice
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOADED_VOICES = 32
_SUFFIX = ".wav"


class InvalidVoice(ValueError):
    """The upload is not a usable voice prompt; the message says why (safe to show)."""


@dataclass(frozen=True)
class PreparedVoice:
    """A validated prompt, ready to store.

    Attributes:
        wav: a 24 kHz mono PCM16 WAV file.
        seconds: its duration.
        source_rate: the upload's own sample rate.
    """

    wav: bytes
    seconds: float
    source_rate: int


def prepare_voice(data: bytes) -> PreparedVoice:
    """Decode and validate an uploaded recording.

    Raises:
        InvalidVoice: not audio, too short or long, too low a sample rate, or silent.
    """
    try:
        pcm, source_rate = decode_audio(data, PCM_RATE, max_seconds=MAX_SECONDS + 1)
    except UndecodableAudio as exc:
        raise InvalidVoice(f"The file is not a readable audio file: {exc}.") from None
    seconds = len(pcm) / (PCM16_WIDTH * PCM_RATE)
    if source_rate < MIN_SOURCE_RATE:
        raise InvalidVoice(
            f"The recording's sample rate is {source_rate} Hz; at least {MIN_SOURCE_RATE} is needed."
        )
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidVoice(
            f"The recording lasts {seconds:.2f} s; a voice prompt must last {MIN_SECONDS:g} to {MAX_SECONDS:g} s."
        )
    samples = pcm16_to_float(pcm)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    level = 20 * math.log10(rms) if rms > 0 else -math.inf
    if level < MIN_LEVEL_DBFS:
        raise InvalidVoice(
            f"The recording is silent ({level:.1f} dBFS); a voice prompt must be at least {MIN_LEVEL_DBFS:g} dBFS."
        )
    return PreparedVoice(_wav(pcm), seconds, source_rate)


def check_name(name: str) -> None:
    """Raise `InvalidVoice` unless ``name`` is 1-64 letters, digits, ``_`` or ``-`` (not starting with a symbol)."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidVoice(
            "A voice name is 1 to 64 characters: letters, digits, '_' and '-', starting with a letter or digit."
        )


class VoiceFolder:
    """The folder of uploaded voices. Not thread-safe for writes: the HTTP layer serialises uploads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Names of the stored voices, sorted (files that are not valid voice names are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name[: -len(_SUFFIX)]
            for p in self.root.iterdir()
            if p.is_file() and p.name.endswith(_SUFFIX) and NAME_PATTERN.fullmatch(p.name[: -len(_SUFFIX)])
        )

    def path(self, name: str) -> Path:
        """Where ``name`` is stored.

        Raises:
            InvalidVoice: ``name`` is not a valid voice name.
        """
        check_name(name)
        return self.root / f"{name}{_SUFFIX}"

    def save(self, name: str, voice: PreparedVoice) -> Path:
        """Store a voice atomically; return its path."""
        target = self.path(name)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(voice.wav)
            os.replace(scratch, target)
        except BaseException:
            Path(scratch).unlink(missing_ok=True)
            raise
        return target

    def delete(self, name: str) -> None:
        """Remove a stored voice (no error if it is already gone)."""
        self.path(name).unlink(missing_ok=True)


def _wav(pcm16: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(PCM16_WIDTH)
        writer.setframerate(PCM_RATE)
        writer.writeframes(pcm16)
    return buffer.getvalue()
