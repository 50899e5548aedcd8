"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` over HTTP: the openai SDK and raw requests,
every response format (json, text, verbose_json, srt, vtt), SSE and errors."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import AsyncOpenAI, BadRequestError

from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.realtime.session.test_transcription import PCM_RATE, expected_transcript, speech_pcm
from tests.support.server_harness import ServerHandle

PATH = "/v1/audio/transcriptions"


def wav(pcm: bytes, rate: int = PCM_RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.frombuffer(pcm, dtype="<i2"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def sdk(server: ServerHandle) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="unused", base_url=server.http_url("/v1"))


async def test_sdk_json_and_text(server: ServerHandle) -> None:
    pcm = speech_pcm(2.0)
    client = sdk(server)
    result = await client.audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="step-audio-2-mini", language="en", prompt="Step"
    )
    assert result.text == expected_transcript(pcm) != ""
    text = await client.audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="whisper-1", response_format="text"
    )
    assert str(text).strip() == result.text


async def test_sdk_stream(server: ServerHandle) -> None:
    pcm = speech_pcm(3.0)
    stream = await sdk(server).audio.transcriptions.create(
        file=("speech.wav", wav(pcm), "audio/wav"), model="gpt-4o-mini-transcribe", stream=True
    )
    kinds, deltas, done = [], [], None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        else:
            done = event
    assert kinds[-1] == "transcript.text.done" and len(deltas) >= 1 and done is not None
    assert done.text == "".join(deltas).strip() == expected_transcript(pcm)
    assert done.usage is not None and done.usage.type == "tokens"


async def test_stereo_flac_is_mixed_down(server: ServerHandle) -> None:
    pcm = speech_pcm(1.0)
    mono = np.frombuffer(pcm, dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([mono, mono], axis=1), PCM_RATE, format="FLAC")
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.http_url(PATH), files={"file": ("a.flac", buffer.getvalue())}, data={"model": "m"}
        )
    assert reply.status_code == 200 and reply.json()["text"] == expected_transcript(pcm)


@pytest.mark.parametrize(
    ("data", "files", "param", "code"),
    [
        ({"model": "m"}, None, "file", "missing_required_parameter"),
        ({}, {"file": ("a.wav", b"RIFF")}, "model", "missing_required_parameter"),
        ({"model": "m"}, {"file": ("a.wav", b"not audio at all")}, "file", "invalid_value"),
        ({"model": "m", "response_format": "diarized_json"}, "speech", "response_format", "invalid_value"),
        (
            {"model": "m", "response_format": "verbose_json", "timestamp_granularities[]": "word"},
            "speech",
            "timestamp_granularities",
            "invalid_value",
        ),
        (
            {"model": "m", "timestamp_granularities[]": "segment"},
            "speech",
            "timestamp_granularities",
            "invalid_value",
        ),
        ({"model": "m", "include[]": "logprobs"}, "speech", "include", "unsupported_value"),
        ({"model": "m", "stream": "maybe"}, "speech", "stream", "invalid_value"),
        ({"model": "m", "temperature": "hot"}, "speech", "temperature", "invalid_type"),
        ({"model": "m", "language": "x" * 40}, "speech", "language", "string_above_max_length"),
    ],
)
async def test_client_mistakes_get_openai_errors(
    server: ServerHandle, data: dict[str, str], files: object, param: str, code: str
) -> None:
    if files == "speech":
        files = {"file": ("a.wav", wav(speech_pcm(0.5)))}
    async with httpx.AsyncClient() as http:
        if files is None:  # still multipart: a dummy field part
            reply = await http.post(server.http_url(PATH), data=data, files={"x": ("x", b"")})
        else:
            reply = await http.post(server.http_url(PATH), data=data, files=files)  # type: ignore[arg-type]
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert "Traceback" not in error["message"]


async def test_not_multipart_is_refused(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(server.http_url(PATH), json={"model": "m"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_content_type"


async def test_sdk_error_is_raised_as_bad_request(server: ServerHandle) -> None:
    with pytest.raises(BadRequestError) as caught:
        await sdk(server).audio.transcriptions.create(
            file=("a.wav", wav(speech_pcm(0.5))),
            model="m",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    body = caught.value.body
    assert body is not None and json.dumps(body).find("timestamp_granularities") >= 0
    assert "word timing" in json.dumps(body)


async def test_api_key_is_required_when_configured(server: ServerHandle) -> None:
    url = server.http_url(PATH, index=APP_KEYED)
    files = {"file": ("a.wav", wav(speech_pcm(0.5)))}
    async with httpx.AsyncClient() as http:
        refused = await http.post(url, data={"model": "m"}, files=files)
        accepted = await http.post(
            url, data={"model": "m"}, files=files, headers={"Authorization": f"Bearer {SERVER_KEY}"}
        )
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert accepted.status_code == 200


async def test_too_long_audio_is_refused_before_decoding(server: ServerHandle) -> None:
    rate = 8000
    silence = b"\x00\x00" * (rate * 301)  # one second over the limit
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(
            server.http_url(PATH), data={"model": "m"}, files={"file": ("long.wav", wav(silence, rate))}
        )
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "audio_too_long"


async def test_upload_without_content_length_is_refused(server: ServerHandle) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--x--\r\n'

    async with httpx.AsyncClient() as http:
        reply = await http.post(
            server.http_url(PATH),
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert reply.status_code == 411 and reply.json()["error"]["code"] == "length_required"


def two_utterances() -> tuple[bytes, int]:
    """Speech, 1.5 s of silence, other speech (PCM16 at 24 kHz); returns the audio and where the gap ends."""
    voice = speech_pcm(5.0)
    first, second = voice[: 2 * PCM_RATE * 2], voice[2 * PCM_RATE * 2 : 4 * PCM_RATE * 2]
    gap = bytes(2 * int(1.5 * PCM_RATE))
    return first + gap + second, 3500


async def test_verbose_json_segments_come_from_the_audio(server: ServerHandle) -> None:
    pcm, second_starts_ms = two_utterances()
    result = await sdk(server).audio.transcriptions.create(
        file=("two.wav", wav(pcm), "audio/wav"),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["segment"],
        language="en",
    )
    assert result.language == "english" and abs(result.duration - len(pcm) / 2 / PCM_RATE) < 0.01
    segments = result.segments or []
    assert len(segments) == 2, segments
    first, second = segments
    assert first.start < 0.3 and 1.7 < first.end < 2.6  # the first utterance, padded a little
    assert second_starts_ms / 1000 - 0.5 < second.start < second_starts_ms / 1000 + 0.3 and second.end <= 5.5
    for segment in segments:  # each text is the transcript of exactly its stretch of audio
        piece = pcm[int(segment.start * PCM_RATE) * 2 : int(segment.end * PCM_RATE) * 2]
        assert segment.text == expected_transcript(piece) != ""
        assert segment.tokens and segment.temperature == 0.0 and segment.compression_ratio > 0
    assert result.text == f"{first.text} {second.text}"
    raw = result.model_dump()
    assert raw["task"] == "transcribe" and raw["segments"][0]["avg_logprob"] is None  # not known: null


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
async def test_subtitles_from_the_segments(server: ServerHandle, fmt: str) -> None:
    pcm, _ = two_utterances()
    client = sdk(server)
    subtitles = await client.audio.transcriptions.create(
        file=("two.wav", wav(pcm), "audio/wav"),
        model="whisper-1",
        response_format=fmt,  # type: ignore[arg-type]
    )
    verbose = await client.audio.transcriptions.create(
        file=("two.wav", wav(pcm), "audio/wav"), model="whisper-1", response_format="verbose_json"
    )
    text = str(subtitles)
    segments = verbose.segments or []
    assert len(segments) == 2
    sep = "," if fmt == "srt" else "."
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n")
    else:
        assert text.startswith("1\n00:00:00,")
    for segment in segments:
        start, end = _clock(segment.start, sep), _clock(segment.end, sep)
        assert f"{start} --> {end}\n{segment.text}\n" in text


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


@pytest.mark.parametrize("fmt", ["json", "text", "verbose_json", "srt", "vtt"])
async def test_translations_in_every_format(server: ServerHandle, fmt: str) -> None:
    pcm, _ = two_utterances()
    result = await sdk(server).audio.translations.create(
        file=("two.wav", wav(pcm), "audio/wav"),
        model="whisper-1",
        response_format=fmt,  # type: ignore[arg-type]
    )
    # the synthetic backend's stand-in words are English already: its translation is its transcript
    if fmt == "json":
        assert result.text == expected_transcript(pcm) != ""  # type: ignore[union-attr]
    elif fmt == "text":
        assert str(result).strip() == expected_transcript(pcm)
    elif fmt == "verbose_json":
        raw = result.model_dump()  # type: ignore[union-attr]
        assert raw["task"] == "translate" and raw["language"] == "english" and len(raw["segments"]) == 2
    else:
        assert "-->" in str(result)


async def test_translation_requests_reach_the_model_with_its_translation_prompt(server: ServerHandle) -> None:
    from realtime.speech.transcribe import TRANSLATE_PROMPT, asr_instructions

    assert asr_instructions(None, "names: Step", "translate").startswith(TRANSLATE_PROMPT)
    assert "英文" in TRANSLATE_PROMPT  # English is the target
    async with httpx.AsyncClient() as http:
        for field in ("language", "stream", "timestamp_granularities[]"):
            reply = await http.post(
                server.http_url("/v1/audio/translations"),
                data={"model": "m", field: "en" if field == "language" else "true"},
                files={"file": ("a.wav", wav(speech_pcm(0.5)))},
            )
            error = reply.json()["error"]
            assert reply.status_code == 400 and error["code"] == "unknown_parameter", reply.text
            assert error["param"] == field.removesuffix("[]")


async def test_stream_is_ignored_for_the_timed_formats(server: ServerHandle) -> None:
    pcm, _ = two_utterances()
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(
            server.http_url(PATH),
            data={"model": "whisper-1", "response_format": "srt", "stream": "true"},
            files={"file": ("two.wav", wav(pcm))},
        )
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert reply.text.startswith("1\n")


async def test_silence_has_no_segments(server: ServerHandle) -> None:
    result = await sdk(server).audio.transcriptions.create(
        file=("quiet.wav", wav(bytes(2 * PCM_RATE)), "audio/wav"), model="m", response_format="verbose_json"
    )
    assert result.segments == [] and result.text == ""
