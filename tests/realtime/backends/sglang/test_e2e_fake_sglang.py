"""End to end: openai SDK -> our server (--backend sglang) -> fake SGLang over HTTP -> parser -> tiny Token2Wav.

The fake SGLang (tests/support/fake_sglang.py) streams a scripted TA4 reply in the tiny tokenizer's ids; the
server must turn it into transcript and audio deltas, send SGLang's wire format back and forth, and abort the
SGLang request by rid the moment the client cancels.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.support.fake_sglang import FakeSGLangServer, FakeSGLangState
from tests.support.server_harness import ServerHandle
from tests.support.sglang_fixtures import start_on_fake, tiny_model_dir
from tests.support.wire_check import validate_frame

__all__ = ["tiny_model_dir"]

MODEL = "step-audio-2-mini"
TTS_PAD, TTS_END, EOT, AUDIO_0 = 151695, 151694, 151692, 151696
ABORT_LATENCY_S = 0.1
PCM_RATE = 24_000


def ta4_reply(text_ids: list[int], groups: int) -> list[int]:
    """``groups`` TA4 groups (1 text slot + 4 audio codes), text first then <tts_pad>, then the end."""
    ids: list[int] = []
    for g in range(groups):
        ids.append(text_ids[g] if g < len(text_ids) else TTS_PAD)
        ids.extend(AUDIO_0 + (37 * (4 * g + k)) % 6561 for k in range(4))
    return [*ids, TTS_END, EOT]


REPLY = ta4_reply([6, 5, 7, 8], groups=15)  # "hi there!" and 60 codes = 2.4 s of speech
LONG_REPLY = ta4_reply([6, 5, 7], groups=2000)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSGLangServer]:
    with FakeSGLangServer(FakeSGLangState(incremental=True, stream_interval=2)) as server:
        yield server


@pytest.fixture(scope="module")
def server(fake: FakeSGLangServer, tiny_model_dir: Path, t2w_cache: Path) -> Iterator[ServerHandle]:
    handle = start_on_fake(fake, tiny_model_dir, t2w_cache)
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def reset_fake(fake: FakeSGLangServer) -> None:
    state = fake.state
    state.script, state.token_delay_s, state.fault, state.audio_mode = (
        (lambda body: REPLY),
        0.0,
        "none",
        "expand",
    )
    state.requests.clear()
    state.aborts.clear()
    state.cached.clear()  # a fresh radix cache per test


def client(server: ServerHandle) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")


async def next_event(conn: Any) -> dict[str, Any]:
    return validate_frame((await conn.recv_bytes()).decode(), "ga")


async def until(conn: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        events.append(await next_event(conn))
        if events[-1]["type"] == kind:
            return events


async def open_session(conn: Any, **session: Any) -> None:
    assert (await next_event(conn))["type"] == "session.created"
    await conn.session.update(session={"type": "realtime", **session})
    await until(conn, "session.updated")


async def say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await until(conn, "conversation.item.done")


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


async def test_spoken_reply_streams_audio_and_transcript(
    server: ServerHandle, fake: FakeSGLangServer
) -> None:
    async with client(server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, instructions="Be brief.")
        await say(conn, "hi there")
        await conn.response.create()
        events = await until(conn, "response.done")
    done = events[-1]["response"]
    assert done["status"] == "completed"
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == "hi there!"
    audio = audio_of(events)
    assert len(audio) > PCM_RATE  # more than half of the 2.4 s reply, decoded chunk by chunk
    (body,) = fake.state.requests
    assert body["rid"] == done["id"]
    assert body["input_ids"][:8] == [151691, 1, 2, 9, 5, 10, 11, EOT]  # <|BOT|>system\nBe brief.<|EOT|>
    assert body["input_ids"][-4:] == [151691, 4, 2, 151693]  # <|BOT|>assistant\n<tts_start>
    assert fake.state.aborts == []


async def test_second_turn_reinserts_the_spoken_answer(server: ServerHandle, fake: FakeSGLangServer) -> None:
    async with client(server).realtime.connect(model=MODEL) as conn:
        await open_session(conn)
        await say(conn, "hi")
        await conn.response.create()
        first_done = (await until(conn, "response.done"))[-1]["response"]
        await say(conn, "ok")
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1]["response"]["status"] == "completed"
    first, second = fake.state.requests
    # usage reports SGLang's cached_tokens: the whole first exchange is a prefix of the second prompt
    assert first_done["usage"]["input_token_details"] == {"cached_tokens": 0}
    cached = events[-1]["response"]["usage"]["input_token_details"]["cached_tokens"]
    assert cached == len(first["input_ids"]) + len(REPLY)
    answer = [151691, 4, 2, 151693, *REPLY]  # prefill + the raw ids as generated (ending in <|EOT|>)
    assert second["input_ids"] == [
        *first["input_ids"][:-4],
        *answer,
        151691,
        3,
        2,
        15,
        EOT,
        151691,
        4,
        2,
        151693,
    ]


async def test_cancel_reaches_sglang_abort_within_100_ms(
    server: ServerHandle, fake: FakeSGLangServer
) -> None:
    fake.state.script = lambda body: LONG_REPLY
    fake.state.token_delay_s = 0.01
    async with client(server).realtime.connect(model=MODEL) as conn:
        await open_session(conn)
        await say(conn, "hi")
        await conn.response.create()
        await until(conn, "response.output_audio.delta")
        cancelled_at = time.monotonic()
        await conn.response.cancel()
        events = await until(conn, "response.done")
    assert events[-1]["response"]["status"] == "cancelled"
    await asyncio.sleep(0.2)
    # The backend aborts as its stream closes, and nothing else sends /abort_request again.
    assert [rid for rid, _ in fake.state.aborts] == [events[-1]["response"]["id"]]
    assert min(at for _, at in fake.state.aborts) - cancelled_at < ABORT_LATENCY_S


async def test_user_audio_is_sent_as_audio_data(server: ServerHandle, fake: FakeSGLangServer) -> None:
    speech = (np.sin(np.arange(PCM_RATE) / 5.0) * 3000).astype("<i2").tobytes()  # 1 s at 24 kHz
    async with client(server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, audio={"input": {"turn_detection": None}})
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1]["response"]["status"] == "completed"
    (body,) = fake.state.requests
    assert len(body["audio_data"]) == 1
    placeholder = [151688, 151690, 151689]
    start = body["input_ids"].index(151688)
    assert body["input_ids"][start : start + 3] == placeholder


async def test_backend_failures_fail_the_response_and_the_session_lives_on(
    server: ServerHandle, fake: FakeSGLangServer
) -> None:
    speech = np.zeros(PCM_RATE // 2, dtype="<i2").tobytes()
    async with client(server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, audio={"input": {"turn_detection": None}})
        fake.state.audio_mode = "drop"  # SGLang without the Step-Audio-2 processor ignores the audio
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        dropped = (await until(conn, "response.done"))[-1]["response"]
        fake.state.audio_mode, fake.state.fault = "expand", "http_500"
        await say(conn, "hi")
        await conn.response.create()
        http_500 = (await until(conn, "response.done"))[-1]["response"]
        fake.state.fault = "none"
        await conn.response.create()
        recovered = (await until(conn, "response.done"))[-1]["response"]
    assert dropped["status"] == "failed"
    assert dropped["status_details"]["error"]["code"] == "audio_dropped"
    assert http_500["status"] == "failed"
    assert http_500["status_details"]["error"]["code"] == "http_500"
    assert recovered["status"] == "completed"


async def test_input_transcription_is_an_asr_request_of_its_own(
    server: ServerHandle, fake: FakeSGLangServer
) -> None:
    tts_start = 151693
    transcript_ids = [6, 5, 7, 8, EOT]  # "hi there!"
    fake.state.script = lambda body: REPLY if body["input_ids"][-1] == tts_start else transcript_ids
    speech = (np.sin(np.arange(PCM_RATE) / 5.0) * 3000).astype("<i2").tobytes()
    async with client(server).realtime.connect(model=MODEL) as conn:
        transcription = {"model": "whisper-1", "language": "en"}
        await open_session(conn, audio={"input": {"turn_detection": None, "transcription": transcription}})
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events: list[dict[str, Any]] = []
        kinds: set[str] = set()
        while not {"response.done", "conversation.item.input_audio_transcription.completed"} <= kinds:
            events.append(await next_event(conn))
            kinds.add(events[-1]["type"])
    completed = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    assert completed["transcript"] == "hi there!"
    assert completed["usage"]["input_tokens"] > 0 and completed["usage"]["output_tokens"] == len(
        transcript_ids
    )
    assert next(e for e in events if e["type"] == "response.done")["response"]["status"] == "completed"
    asr = next(body for body in fake.state.requests if body["input_ids"][-1] != tts_start)
    reply = next(body for body in fake.state.requests if body["input_ids"][-1] == tts_start)
    # system ASR prompt, a human turn holding only the audio, then a text-only assistant prefill
    assert asr["input_ids"][:2] == [151691, 1] and asr["input_ids"][-3:] == [151691, 4, 2]
    human = asr["input_ids"].index(3)
    assert asr["input_ids"][human : human + 5] == [3, 2, 151688, 151690, 151689]
    assert len(asr["audio_data"]) == 1 and asr["audio_data"] == reply["audio_data"]
    assert asr["sampling_params"]["temperature"] == 0.0 and asr["rid"] != reply["rid"]
