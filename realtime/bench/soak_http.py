"""The HTTP arm of `realtime bench soak`: speech, chat, transcriptions and voice uploads, slow bodies and
disconnects, against the same server the Realtime arm soaks.

Each of ``--http-clients`` clients sends ``--http-requests`` requests, cycling through the kinds of `KINDS`:
speech streamed as audio and as Server-Sent Events, chat (text) and chat streamed with audio, a transcription
(a generated two-second WAV), and a voice upload followed by its delete. Every ``--slow-body-every``-th upload
is sent in small pieces over about a second (a slow but steady client); every ``--disconnect-every``-th
request is abandoned: a streamed answer after its first bytes, an upload halfway through its body. Outcomes
are tallied by kind and HTTP status, errors by code; anything that is not an expected answer is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("speech_audio", "speech_sse", "chat", "chat_audio_stream", "transcription", "voice_upload")
SLOW_PIECES = 10  # a slow body arrives in this many pieces
SLOW_PIECE_GAP_S = 0.1
SOAK_AUDIO_RATE = 24_000
TRANSCRIPTION_SECONDS = 2.0
VOICE_SECONDS = 3.0
EXPECTED = {200, 201, 503}  # 503: a limit said "retry later" (counted, not a failure)


@dataclass
class HttpTally:
    """What the HTTP clients saw (event loop only)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0
    slow_bodies: int = 0
    failures: list[str] = field(default_factory=list)
    finished: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the HTTP arm (added to `realtime bench soak`)."""
    parser.add_argument(
        "--http-clients", type=int, default=4, help="concurrent HTTP clients (with --arm http/both)"
    )
    parser.add_argument("--http-requests", type=int, default=30, help="requests per HTTP client")
    parser.add_argument(
        "--disconnect-every", type=int, default=5, help="abandon every Nth HTTP request mid-way (0: never)"
    )
    parser.add_argument(
        "--slow-body-every",
        type=int,
        default=3,
        help="send every Nth upload body slowly, in pieces (0: never)",
    )


def _tone_wav(seconds: float, seed: int) -> bytes:
    """A loud, voice-like WAV (a gliding tone with a little noise), 16-bit mono at 24 kHz."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SOAK_AUDIO_RATE)) / SOAK_AUDIO_RATE
    pitch = 140 + 40 * np.sin(2 * math.pi * 0.7 * t)
    wave = 0.4 * np.sin(2 * math.pi * np.cumsum(pitch) / SOAK_AUDIO_RATE) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), SOAK_AUDIO_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def _pieces(body: bytes, count: int, gap: float, stop_after: int | None = None) -> AsyncIterator[bytes]:
    size = math.ceil(len(body) / count)
    for index in range(count):
        if stop_after is not None and index >= stop_after:
            raise ConnectionAbortedError("the soak abandons this upload mid-body")
        yield body[index * size : (index + 1) * size]
        await asyncio.sleep(gap)


class HttpClient:
    """One soak client over one `httpx.AsyncClient` (keep-alive connections, as SDKs use them)."""

    def __init__(self, http: Any, index: int, args: argparse.Namespace, tally: HttpTally) -> None:
        self._http = http
        self._index = index
        self._args = args
        self._tally = tally
        self._asr_wav = _tone_wav(TRANSCRIPTION_SECONDS, index)
        self._voice_wav = _tone_wav(VOICE_SECONDS, 1000 + index)

    async def run(self, warm: asyncio.Event) -> None:
        for turn in range(self._args.http_requests):
            kind = KINDS[(self._index + turn) % len(KINDS)]
            every = self._args.disconnect_every
            abandon = bool(every) and turn % every == every - 1
            slow_every = self._args.slow_body_every
            slow = bool(slow_every) and turn % slow_every == slow_every - 1
            try:
                status = await getattr(self, f"_{kind}")(abandon, slow, turn)
            except Exception as exc:  # a transport failure the soak did not cause on purpose
                self._tally.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                status = "failed"
            self._tally.outcomes[f"{kind}:{status}"] += 1
            self._tally.finished += 1
            if self._tally.finished >= self._args.warmup:
                warm.set()

    def _record(self, kind: str, status: int, body: bytes) -> int:
        if status >= 400:
            try:
                code = json.loads(body)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = f"http_{status}"
            self._tally.errors[str(code)] += 1
            if status not in EXPECTED:
                self._tally.failures.append(f"{kind}: {status} {body[:200]!r}")
        return status

    async def _stream(self, kind: str, method: str, path: str, abandon: bool, **request: Any) -> int | str:
        async with self._http.stream(method, path, **request) as response:
            if abandon and response.status_code == 200:
                async for _ in response.aiter_raw():
                    break  # the client goes away mid-answer
                self._tally.abandoned += 1
                return "abandoned"
            body = await response.aread()
            return self._record(kind, response.status_code, body)

    async def _speech_audio(self, abandon: bool, slow: bool, turn: int) -> int | str:
        body = {"model": "tts-1", "voice": "alloy", "input": self._args.text, "response_format": "pcm"}
        return await self._stream("speech_audio", "POST", "/v1/audio/speech", abandon, json=body)

    async def _speech_sse(self, abandon: bool, slow: bool, turn: int) -> int | str:
        body = {"model": "tts-1", "voice": "alloy", "input": self._args.text, "stream_format": "sse"}
        return await self._stream("speech_sse", "POST", "/v1/audio/speech", abandon, json=body)

    async def _chat(self, abandon: bool, slow: bool, turn: int) -> int | str:
        body = {"model": "x", "messages": [{"role": "user", "content": self._args.text}]}
        response = await self._http.post("/v1/chat/completions", json=body)
        return self._record("chat", response.status_code, response.content)

    async def _chat_audio_stream(self, abandon: bool, slow: bool, turn: int) -> int | str:
        body = {
            "model": "x",
            "messages": [{"role": "user", "content": self._args.text}],
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "pcm16"},
            "stream": True,
        }
        return await self._stream("chat_audio_stream", "POST", "/v1/chat/completions", abandon, json=body)

    async def _upload(
        self, kind: str, path: str, files: dict[str, Any], data: dict[str, str], abandon: bool, slow: bool
    ) -> tuple[int | str, bytes]:
        import httpx

        built = httpx.Request("POST", "http://soak" + path, files=files, data=data)
        payload = built.read()
        headers = {"content-type": built.headers["content-type"], "content-length": str(len(payload))}
        if not (slow or abandon):
            response = await self._http.post(path, content=payload, headers=headers)
            return self._record(kind, response.status_code, response.content), response.content
        if slow:
            self._tally.slow_bodies += 1
        stop = SLOW_PIECES // 2 if abandon else None
        pieces = _pieces(payload, SLOW_PIECES, SLOW_PIECE_GAP_S if slow else 0.0, stop)
        try:
            response = await self._http.post(path, content=pieces, headers=headers)
        except (httpx.TransportError, ConnectionAbortedError):
            if not abandon:
                raise
            self._tally.abandoned += 1
            return "abandoned", b""
        return self._record(kind, response.status_code, response.content), response.content

    async def _transcription(self, abandon: bool, slow: bool, turn: int) -> int | str:
        files = {"file": ("speech.wav", self._asr_wav, "audio/wav")}
        status, _ = await self._upload(
            "transcription", "/v1/audio/transcriptions", files, {"model": "m"}, abandon, slow
        )
        return status

    async def _voice_upload(self, abandon: bool, slow: bool, turn: int) -> int | str:
        name = f"soak_{self._index}_{turn}"
        files = {"file": ("voice.wav", self._voice_wav, "audio/wav")}
        status, _ = await self._upload(
            "voice_upload", "/v1/audio/voices", files, {"name": name}, abandon, slow
        )
        if status == 201:
            deleted = await self._http.delete(f"/v1/audio/voices/{name}")
            self._record("voice_delete", deleted.status_code, deleted.content)
        return status


async def run_http_clients(
    base_url: str, args: argparse.Namespace, tally: HttpTally, warm: asyncio.Event
) -> None:
    """Run every HTTP client of the arm to its end."""
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"}
    timeout = httpx.Timeout(args.timeout)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout) as http:
        clients = [HttpClient(http, index, args, tally) for index in range(args.http_clients)]
        results = await asyncio.gather(*(client.run(warm) for client in clients), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.failures.append(f"{type(result).__name__}: {result}")


def http_report(tally: HttpTally) -> dict[str, Any]:
    """The arm's part of the soak report."""
    return {
        "requests_by_kind_and_status": dict(sorted(tally.outcomes.items())),
        "errors_by_code": dict(tally.errors),
        "abandoned": tally.abandoned,
        "slow_bodies": tally.slow_bodies,
        "client_failures": tally.failures[:20],
        "client_failure_count": len(tally.failures),
    }
