"""The official openai SDK against our server: GA (`client.realtime`) and beta (`client.beta.realtime`)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from tests.support.server_harness import ServerHandle
from tests.support.wire_check import validate_frame

MODEL = "step-audio-2-mini"
PCM_RATE = 24_000
MIN_DELTA_MS, MAX_DELTA_MS = 20, 100


def _client(server: ServerHandle) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")


async def _events_until_done(conn: Any, dialect: str) -> list[dict[str, Any]]:
    events = []
    while True:
        raw = await conn.recv_bytes()
        event = validate_frame(raw.decode(), dialect)
        parsed = conn.parse_event(raw)
        assert parsed.type == event["type"]
        events.append(event)
        if event["type"] == "response.done":
            return events


def _check_spoken_response(events: list[dict[str, Any]], names: dict[str, str]) -> bytes:
    """Order, ids and delta sizes of one spoken response; returns the audio."""
    kinds = [e["type"] for e in events]
    created = kinds.index("response.created")
    assert kinds.index("response.output_item.added") > created
    assert kinds.index("response.content_part.added") > kinds.index("response.output_item.added")
    assert kinds[-1] == "response.done"
    response_id = events[created]["response"]["id"]
    item_id = events[kinds.index("response.output_item.added")]["item"]["id"]
    deltas = [e for e in events if e["type"] == names["audio_delta"]]
    transcript = [e for e in events if e["type"] == names["transcript_delta"]]
    assert deltas and transcript
    for event in deltas + transcript:
        assert (event["response_id"], event["item_id"]) == (response_id, item_id)
        assert (event["output_index"], event["content_index"]) == (0, 0)
    audio = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    sizes_ms = [len(base64.b64decode(e["delta"])) / 2 / PCM_RATE * 1000 for e in deltas]
    assert all(ms <= MAX_DELTA_MS for ms in sizes_ms)
    assert all(ms >= MIN_DELTA_MS for ms in sizes_ms[:-1])  # only the final piece may be shorter
    done_transcript = next(e for e in events if e["type"] == names["transcript_done"])["transcript"]
    assert done_transcript == "".join(e["delta"] for e in transcript)
    assert kinds.index(names["audio_done"]) < kinds.index(names["transcript_done"])
    assert kinds.index(names["transcript_done"]) < kinds.index("response.content_part.done")
    assert kinds.index("response.content_part.done") < kinds.index("response.output_item.done")
    assert max(i for i, k in enumerate(kinds) if k == names["audio_delta"]) < kinds.index(names["audio_done"])
    done = events[-1]["response"]
    assert done["id"] == response_id and done["status"] == "completed"
    assert done["status_details"] == {"type": "completed"}
    assert done["usage"]["output_tokens"] > 0
    assert done["output"][0]["id"] == item_id
    return audio


GA_NAMES = {
    "audio_delta": "response.output_audio.delta",
    "audio_done": "response.output_audio.done",
    "transcript_delta": "response.output_audio_transcript.delta",
    "transcript_done": "response.output_audio_transcript.done",
}
BETA_NAMES = {
    "audio_delta": "response.audio.delta",
    "audio_done": "response.audio.done",
    "transcript_delta": "response.audio_transcript.delta",
    "transcript_done": "response.audio_transcript.done",
}


async def test_ga_sdk_text_in_spoken_answer_out(server: ServerHandle) -> None:
    async with _client(server).realtime.connect(model=MODEL) as conn:
        first = validate_frame((await conn.recv_bytes()).decode(), "ga")
        assert first["type"] == "session.created"
        session = first["session"]
        assert session["type"] == "realtime" and session["model"] == MODEL
        assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": PCM_RATE}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"

        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "alloy"}}}
        )
        updated = validate_frame((await conn.recv_bytes()).decode(), "ga")
        assert updated["type"] == "session.updated"
        assert updated["session"]["instructions"] == "Be brief."
        assert updated["session"]["audio"]["output"]["voice"] == "alloy"  # echoed; the default voice speaks

        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            }
        )
        added = validate_frame((await conn.recv_bytes()).decode(), "ga")
        assert added["type"] == "conversation.item.added"
        assert validate_frame((await conn.recv_bytes()).decode(), "ga")["type"] == "conversation.item.done"

        await conn.response.create()
        events = await _events_until_done(conn, "ga")
        audio = _check_spoken_response(events, GA_NAMES)
        assert len(audio) % 2 == 0 and len(audio) > 0
        assert events[-1]["response"]["audio"]["output"]["voice"] == "alloy"
        # real Token2Wav output (random weights): a varying waveform, not silence or a constant
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float64)
        assert samples.std() > 1.0 and np.count_nonzero(np.diff(samples)) > len(samples) // 2
        kinds = [e["type"] for e in events]
        assert kinds.count("conversation.item.added") == 1 and kinds.count("conversation.item.done") == 1


async def test_beta_sdk_text_in_spoken_answer_out(server: ServerHandle) -> None:
    async with _client(server).beta.realtime.connect(model=MODEL) as conn:
        first = validate_frame((await conn.recv_bytes()).decode(), "beta")
        assert first["type"] == "session.created"
        assert first["session"]["modalities"] == ["text", "audio"]
        assert first["session"]["output_audio_format"] == "pcm16"
        assert validate_frame((await conn.recv_bytes()).decode(), "beta")["type"] == "conversation.created"

        await conn.session.update(session={"voice": "default", "instructions": "Be brief."})
        updated = validate_frame((await conn.recv_bytes()).decode(), "beta")
        assert updated["type"] == "session.updated" and updated["session"]["voice"] == "default"

        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
        )
        created = validate_frame((await conn.recv_bytes()).decode(), "beta")
        assert created["type"] == "conversation.item.created"

        await conn.response.create()
        events = await _events_until_done(conn, "beta")
        _check_spoken_response(events, BETA_NAMES)
        kinds = [e["type"] for e in events]
        assert "conversation.item.created" in kinds and "conversation.item.done" not in kinds
        assert events[-1]["response"]["modalities"] == ["text", "audio"]
