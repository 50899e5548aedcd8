"""Shared bits of the client programs (run by the client virtualenv's Python, not by the test suite's).

Only the standard library and the client venv's packages may be imported here: these programs are real
users of the server, installed beside the newest ``openai`` / ``openai-agents``.
"""

from __future__ import annotations

import base64
import json
import sys
import wave
from dataclasses import asdict, dataclass, field
from typing import Any

CHUNK_MS = 100


def read_wav(path: str) -> tuple[bytes, int]:
    """A mono PCM16 WAV file -> (PCM16 LE bytes, sample rate)."""
    with wave.open(path, "rb") as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2, "mono PCM16 expected"
        return reader.readframes(reader.getnframes()), reader.getframerate()


def chunks_b64(pcm: bytes, rate: int) -> list[str]:
    """``pcm`` as base64 pieces of CHUNK_MS each (what a microphone client appends)."""
    size = rate * CHUNK_MS // 1000 * 2
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


@dataclass
class Report:
    """What a client program found, printed as one JSON line on stdout for the test to assert on.

    Attributes:
        client: package versions used.
        validation_errors: server events the client's own models refused.
        error_events: ``error`` events (or SDK error events) received.
        checks: named facts the program observed (transcripts, statuses, event counts...).
    """

    client: dict[str, str] = field(default_factory=dict)
    validation_errors: list[str] = field(default_factory=list)
    error_events: list[Any] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def emit(self) -> None:
        """Print the report (the last stdout line)."""
        sys.stdout.write(json.dumps(asdict(self), default=str) + "\n")
        sys.stdout.flush()
