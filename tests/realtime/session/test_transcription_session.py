"""Transcription sessions (``?intent=transcription``) over a raw socket, GA and beta: the first event, updates,
client- and VAD-committed audio transcribed with OpenAI's item events and no response, and the rolling history.

The event order asserted here is the one read from OpenAI (docs/PROTOCOL.md §4.8): a live GA capture for the
GA flow, OpenAI's beta frames as quoted by its users for the beta one. Every frame is validated by the openai
SDK models of its dialect (tests/support/wire_check.py).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime.wire.handshake import Dialect, negotiate
from tests.realtime.session.test_transcription import (
    PCM_RATE,
    TRANSCRIPTION_EVENTS,
    expected_transcript,
    speech_pcm,
)
from tests.support.fake_transport import FakeTransport
from tests.support.server_harness import ServerHandle
from tests.support.session_harness import light_runtime, running
from tests.support.wire_check import RawClient

TRANSCRIBE_QUERY = "intent=transcription"
CHUNK_MS = 100
DELTA = TRANSCRIPTION_EVENTS + "delta"
COMPLETED = TRANSCRIPTION_EVENTS + "completed"
SETTINGS = {"model": "gpt-4o-transcribe", "language": "en"}  # a model name beta's SDK models also list


@pytest.fixture
async def ga_stt(server: ServerHandle) -> AsyncIterator[RawClient]:
    """A GA transcription session on the main server."""
    client = await RawClient.connect(server.ws_url(), query=TRANSCRIBE_QUERY)
    yield client
    await client.close()


@pytest.fixture
async def beta_stt(server: ServerHandle) -> AsyncIterator[RawClient]:
    """A beta transcription session on the main server."""
    client = await RawClient.connect(server.ws_url(), beta=True, query=TRANSCRIBE_QUERY)
    yield client
    await client.close()


def _silence(ms: int) -> bytes:
    return b"\x00\x00" * (PCM_RATE * ms // 1000)


async def _append(client: RawClient, pcm: bytes) -> None:
    size = PCM_RATE * CHUNK_MS // 1000 * 2
    for start in range(0, len(pcm), size):
        chunk = base64.b64encode(pcm[start : start + size]).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})


async def _configure(client: RawClient, turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    """Turn transcription on (with ``turn_detection``) in the session's own update; return the echo."""
    if client.dialect == "ga":
        audio_input = {"transcription": SETTINGS, "turn_detection": turn_detection}
        update = {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": audio_input}},
        }
    else:
        session = {"input_audio_transcription": SETTINGS, "turn_detection": turn_detection}
        update = {"type": "transcription_session.update", "session": session}
    await client.send(update)
    updated = await client.recv()
    assert updated["type"] == (
        "session.updated" if client.dialect == "ga" else "transcription_session.updated"
    )
    session_echo: dict[str, Any] = updated["session"]
    return session_echo


async def _until_completed(client: RawClient) -> list[dict[str, Any]]:
    events = await client.until(COMPLETED)
    assert not [e for e in events if e["type"].startswith("response.") or e["type"] == "error"], events
    return events


def _item_events(client: RawClient) -> list[str]:
    # OpenAI's item events: GA conversation.item.added then .done; beta conversation.item.created alone
    return (
        ["conversation.item.added", "conversation.item.done"]
        if client.dialect == "ga"
        else ["conversation.item.created"]
    )


def _check_transcribed(client: RawClient, events: list[dict[str, Any]], pcm: bytes) -> str:
    """The commit, the item events, the deltas and the completion, in OpenAI's order, for one item."""
    kinds = [e["type"] for e in events if e["type"] != DELTA]
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    item_id = committed["item_id"]
    expected = ["input_audio_buffer.committed", *_item_events(client), COMPLETED]
    assert [k for k in kinds if k in expected] == expected
    first_delta = next(i for i, e in enumerate(events) if e["type"] == DELTA)
    assert first_delta > kinds.index(_item_events(client)[-1])  # the deltas follow the item events
    added = next(e for e in events if e["type"] == _item_events(client)[0])["item"]
    assert added["id"] == item_id and added["role"] == "user"
    assert added["content"] == [{"type": "input_audio", "transcript": None}]
    deltas = [e for e in events if e["type"] == DELTA]
    completed = events[-1]
    want = expected_transcript(pcm)
    assert want and completed["transcript"] == want == "".join(d["delta"] for d in deltas).strip()
    assert all(e["item_id"] == item_id and e["content_index"] == 0 for e in [*deltas, completed])
    assert completed["usage"]["type"] == "tokens" and completed["usage"]["output_tokens"] > 0
    return str(item_id)


async def test_ga_session_opens_as_a_transcription_session(ga_stt: RawClient) -> None:
    session = ga_stt.created["session"]
    assert session["object"] == "realtime.transcription_session" and session["id"].startswith("sess_")
    audio_input = session["audio"]["input"]
    assert audio_input["transcription"] is None and audio_input["noise_reduction"] is None
    assert audio_input["format"] == {"type": "audio/pcm", "rate": PCM_RATE}
    assert audio_input["turn_detection"]["type"] == "server_vad"
    assert set(audio_input["turn_detection"]) == {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
    }
    assert session["include"] is None and "instructions" not in session and "output" not in session["audio"]


async def test_ga_update_echoes_the_transcription_settings(ga_stt: RawClient) -> None:
    audio_input = {
        "transcription": {**SETTINGS, "prompt": "names: Ada"},
        "noise_reduction": {"type": "near_field"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700, "create_response": True},
    }
    await ga_stt.send(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}
    )
    echoed = (await ga_stt.recv())["session"]["audio"]["input"]
    assert echoed["transcription"] == {**SETTINGS, "prompt": "names: Ada"}
    assert echoed["noise_reduction"] == {"type": "near_field"}
    assert (
        echoed["turn_detection"]["silence_duration_ms"] == 700
        and "create_response" not in echoed["turn_detection"]
    )


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_client_committed_audio_is_transcribed(
    dialect: str, ga_stt: RawClient, beta_stt: RawClient
) -> None:
    client = ga_stt if dialect == "ga" else beta_stt
    await _configure(client, None)
    pcm = speech_pcm(1.5)
    await _append(client, pcm)
    await client.send({"type": "input_audio_buffer.commit"})
    item_id = _check_transcribed(client, await _until_completed(client), pcm)
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert retrieved["content"][0]["transcript"] == expected_transcript(pcm)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_vad_committed_audio_is_transcribed_and_never_answered(
    dialect: str, ga_stt: RawClient, beta_stt: RawClient
) -> None:
    client = ga_stt if dialect == "ga" else beta_stt
    # create_response is set and ignored: a transcription session never responds
    echo = await _configure(
        client, {"type": "server_vad", "silence_duration_ms": 500, "create_response": True}
    )
    assert (echo["audio"]["input"] if dialect == "ga" else echo)["turn_detection"]["type"] == "server_vad"
    await _append(client, _silence(300) + speech_pcm(2.0) + _silence(1200))
    events = await _until_completed(client)
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert (
        next(e for e in events if e["type"] == "input_audio_buffer.speech_started")["item_id"]
        == committed["item_id"]
    )
    assert events[-1]["item_id"] == committed["item_id"] and events[-1]["transcript"]
    await client.alive()  # and no response follows: alive() reads the very next event


async def test_response_create_gets_no_response(ga_stt: RawClient) -> None:
    await ga_stt.send({"type": "response.create", "event_id": "evt_answer"})
    error = await ga_stt.error("invalid_parameter", event_id="evt_answer")
    assert "transcription session" in error["message"]
    await ga_stt.alive()


# per dialect: an update of the realtime kind and OpenAI's refusal of it in a transcription session, then one of
# the transcription kind and its refusal in a realtime session (docs/PROTOCOL.md §8.3 R23, R55, R56, R58)
_WRONG_TYPE = {
    "ga": (
        {"type": "session.update", "session": {"type": "realtime", "instructions": "talk"}},
        "Passing a realtime session update to a transcription session is not allowed.",
        {"type": "session.update", "session": {"type": "transcription"}},
        "Passing a transcription session update to a realtime session is not allowed.",
    ),
    "beta": (
        {"type": "session.update", "session": {"instructions": "talk"}},
        "Passing a realtime session update event to a transcription session is not allowed.",
        {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16"}},
        "Passing a transcription session update event to a realtime session is not allowed.",
    ),
}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_session_type_cannot_change(
    dialect: str, ga_stt: RawClient, beta_stt: RawClient, ga: RawClient, beta: RawClient
) -> None:
    stt, realtime = (ga_stt, ga) if dialect == "ga" else (beta_stt, beta)
    to_stt, stt_refusal, to_realtime, realtime_refusal = _WRONG_TYPE[dialect]
    await stt.send(to_stt)
    assert (await stt.error("invalid_parameter"))["message"] == stt_refusal
    await realtime.send(to_realtime)
    assert (await realtime.error("invalid_parameter"))["message"] == realtime_refusal
    await stt.alive()
    await realtime.alive()


async def test_realtime_fields_are_unknown_in_a_transcription_session(ga_stt: RawClient) -> None:
    for field, value in (("instructions", "x"), ("tools", []), ("parallel_tool_calls", True)):
        await ga_stt.send({"type": "session.update", "session": {"type": "transcription", field: value}})
        assert (await ga_stt.error("unknown_parameter"))["param"] == f"session.{field}"
    await ga_stt.send(
        {
            "type": "session.update",
            "session": {"type": "transcription", "include": ["item.input_audio_transcription.logprobs"]},
        }
    )
    assert (await ga_stt.error("invalid_value"))["param"] == "session.include"
    await ga_stt.alive()


async def test_beta_update_takes_beta_fields_and_ignores_the_key_settings(beta_stt: RawClient) -> None:
    session = {
        "input_audio_format": "g711_ulaw",
        "input_audio_transcription": SETTINGS,
        "input_audio_noise_reduction": {"type": "far_field"},
        "turn_detection": {"silence_duration_ms": 900},  # beta's type defaults to server_vad
        "client_secret": {"expires_at": {"anchor": "created_at", "seconds": 600}},
        "modalities": ["text"],
    }
    await beta_stt.send({"type": "transcription_session.update", "session": session})
    echo = (await beta_stt.recv())["session"]
    assert echo["input_audio_format"] == "g711_ulaw" and echo["input_audio_transcription"] == SETTINGS
    assert echo["input_audio_noise_reduction"] == {"type": "far_field"}
    assert (
        echo["turn_detection"]["type"] == "server_vad"
        and echo["turn_detection"]["silence_duration_ms"] == 900
    )
    assert "client_secret" not in echo  # absent over a WebSocket, as OpenAI documents


async def test_a_model_beside_the_intent_is_ignored(server: ServerHandle) -> None:
    # LiveKit's STT sends ?model= to hosts other than OpenAI's, for gateways to route on
    client = await RawClient.connect(server.ws_url(), query=f"{TRANSCRIBE_QUERY}&model=gpt-realtime-whisper")
    try:
        assert client.created["session"]["type"] == "transcription"
        await client.alive()
    finally:
        await client.close()


def test_the_intent_picks_the_session_type() -> None:
    assert negotiate({}, [], query={"intent": "transcription"}).session_type == "transcription"
    assert negotiate({}, [], query={"intent": "other"}).session_type == "realtime"
    assert negotiate({}, [], query={"model": "m"}).session_type == "realtime"


async def test_items_roll_over_instead_of_filling_the_conversation() -> None:
    # a dictation that outlives the conversation caps keeps going: the oldest items make room
    async with light_runtime(max_conversation_items=2) as runtime:
        transport = FakeTransport()
        async with running(runtime, transport, session_type="transcription") as (session, _task):
            assert (await transport.recv())["type"] == "session.created"
            await transport.send(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": SETTINGS, "turn_detection": None}},
                    },
                }
            )
            await transport.until("session.updated")
            ids = []
            for _turn in range(3):
                await transport.send(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(speech_pcm(0.5)).decode()}
                )
                await transport.send({"type": "input_audio_buffer.commit"})
                ids.append((await transport.until(COMPLETED))[-1]["item_id"])
            assert [item.id for item in session.conversation] == ids[1:]
            await transport.send({"type": "conversation.item.retrieve", "item_id": ids[0]})
            error = (await transport.until("error"))[-1]["error"]
            assert error["code"] == "item_retrieve_invalid_item_id"
            assert session.transcribes_only and session.events.dialect is Dialect.GA
