"""The newest ``openai`` SDK's ``audio.transcriptions.create`` and ``audio.translations.create`` in every format.

Usage: ``python sdk_audio.py HTTP_BASE WAV``. For each of ``json``, ``text``, ``verbose_json``, ``srt`` and
``vtt`` both calls run against the server; the report keeps what the SDK returned (its own types parse the
JSON formats) and any exception it raised, plus the streamed transcription (``stream=True``).
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import Report
from openai import AsyncOpenAI

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
MODEL = "whisper-1"


def _describe(result: Any) -> dict[str, Any]:
    if isinstance(result, str):
        return {"kind": "str", "text": result}
    data = result.model_dump()
    return {"kind": type(result).__name__, **data}


async def main(base: str, audio: bytes) -> None:
    report = Report(client={"openai": version("openai")})
    client = AsyncOpenAI(api_key="unused", base_url=base)
    for fmt in FORMATS:
        for name, call in (
            ("transcriptions", client.audio.transcriptions.create),
            ("translations", client.audio.translations.create),
        ):
            extra: dict[str, Any] = {}
            if name == "transcriptions" and fmt == "verbose_json":
                extra["timestamp_granularities"] = ["segment"]
            try:
                result = await call(
                    file=("speech.wav", audio, "audio/wav"), model=MODEL, response_format=fmt, **extra
                )
                report.checks[f"{name}_{fmt}"] = _describe(result)
            except Exception as exc:  # the SDK's own error types: recorded, the test fails on them
                report.error_events.append(f"{name} {fmt}: {type(exc).__name__}: {exc}"[:500])
    stream = await client.audio.transcriptions.create(
        file=("speech.wav", audio, "audio/wav"), model="gpt-4o-mini-transcribe", stream=True
    )
    report.checks["stream"] = [event.type async for event in stream]
    report.emit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]).read_bytes()))
