"""Error paths over a real socket beyond the refusal table: messages, event ids, failed responses, expiry.

Every refusal's code, type and param is checked by tests/realtime/test_error_codes.py (docs/PROTOCOL.md §8.3).
"""

from __future__ import annotations

import base64
import json

import pytest
import websockets

from tests.realtime.conftest import (
    APP_EXPIRING,
    APP_FAILING,
    EXPIRING_SESSION_SECONDS,
    FAILURE_CODE,
    FAILURE_MESSAGE,
    SECOND_VOICE,
)
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient, validate_frame

PCM_100MS = b"\x00\x00" * 2400
USER_TEXT = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0}, "audio_end_ms"),
        ({"type": "input_audio_buffer.append"}, "audio"),
        ({"type": "conversation.item.create"}, "item"),
        ({"type": "conversation.item.retrieve"}, "item_id"),
        ({"type": "session.update"}, "session"),
    ],
)
async def test_missing_fields(ga: RawClient, event: dict[str, object], param: str) -> None:
    await ga.send(event)
    error = await ga.error("missing_required_parameter")
    assert error["param"] == param
    await ga.alive()


async def test_bad_base64(ga: RawClient) -> None:
    await ga.send({"type": "input_audio_buffer.append", "audio": "not base64!!"})
    assert (await ga.error("invalid_value"))["param"] == "audio"
    await ga.alive()


async def test_odd_byte_count(ga: RawClient) -> None:
    await ga.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode()})
    assert (await ga.error("invalid_value"))["param"] == "audio"
    await ga.alive()


async def test_twenty_megabyte_frame(ga: RawClient) -> None:
    audio = "A" * (20 * 1024 * 1024)
    await ga.send({"type": "input_audio_buffer.append", "audio": audio})
    await ga.error("string_above_max_length")
    await ga.alive()


async def test_ga_session_update_requires_type(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": {"instructions": "x"}})
    assert (await ga.error("missing_required_parameter"))["param"] == "session.type"
    await ga.alive()


async def test_an_unknown_session_type_is_refused(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": {"type": "translation"}})
    error = await ga.error("invalid_value")
    assert error["param"] == "session.type" and "'realtime' and 'transcription'" in error["message"]
    await ga.alive()


async def test_unknown_parameter_leaves_session_unchanged(ga: RawClient) -> None:
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": "new", "custom_voice_id": "x"},
        }
    )
    error = await ga.error("unknown_parameter")
    assert error["param"] == "session.custom_voice_id"
    assert error["message"] == "Unknown parameter: 'session.custom_voice_id'."
    await ga.send({"type": "session.update", "session": {"type": "realtime"}})
    updated = await ga.recv()
    assert updated["session"]["instructions"] != "new"  # all-or-nothing


async def test_tool_description_too_long(ga: RawClient) -> None:
    tool = {"type": "function", "name": "f", "description": "x" * 1025, "parameters": {"type": "object"}}
    await ga.send({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
    assert (await ga.error("string_above_max_length"))["param"] == "session.tools[0].description"
    await ga.alive()


async def test_unknown_voice(ga: RawClient) -> None:
    session = {"type": "realtime", "audio": {"output": {"voice": "no-such-voice"}}}
    await ga.send({"type": "session.update", "session": session})
    assert (await ga.error("invalid_value"))["param"] == "session.audio.output.voice"
    await ga.alive()


async def test_active_response(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": USER_TEXT})
    await ga.until("conversation.item.done")
    await ga.send({"type": "response.create"})
    await ga.send({"type": "response.create", "event_id": "evt_second"})
    events = await ga.until("error")
    assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
    assert events[-1]["error"]["event_id"] == "evt_second"
    done = await ga.until("response.done")
    assert done[-1]["response"]["status"] == "completed"  # the first response was not disturbed


async def test_cancel_not_active(ga: RawClient) -> None:
    await ga.send({"type": "response.cancel", "event_id": "evt_c"})
    error = await ga.error("response_cancel_not_active", event_id="evt_c")
    assert error["message"] == "Cancellation failed: no active response found"
    await ga.alive()


async def test_commit_empty(ga: RawClient) -> None:
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await ga.recv()
    await ga.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(PCM_100MS[:2400]).decode()})
    await ga.send({"type": "input_audio_buffer.commit"})
    error = await ga.error("input_audio_buffer_commit_empty")
    assert "Expected at least 100ms" in error["message"]
    await ga.alive()


async def test_unsupported_item_type(ga: RawClient) -> None:
    await ga.send({"type": "conversation.item.create", "item": {"type": "mcp_call", "id": "x"}})
    assert (await ga.error("invalid_value"))["param"] == "item.type"
    await ga.alive()


async def test_voice_change_after_audio(ga: RawClient) -> None:
    voice = {"type": "realtime", "audio": {"output": {"voice": SECOND_VOICE}}}
    await ga.send({"type": "session.update", "session": voice})  # allowed: no audio yet
    assert (await ga.recv())["session"]["audio"]["output"]["voice"] == SECOND_VOICE
    await ga.send({"type": "conversation.item.create", "item": USER_TEXT})
    await ga.send({"type": "response.create"})
    events = await ga.until("response.done")
    assert any(e["type"] == "response.output_audio.delta" for e in events)
    back = {"type": "realtime", "audio": {"output": {"voice": "default"}}}
    await ga.send({"type": "session.update", "session": back, "event_id": "evt_v"})
    error = await ga.error("cannot_update_voice", event_id="evt_v")
    assert error["message"] == "Cannot update a conversation's voice if assistant audio is present."
    await ga.send({"type": "session.update", "session": voice})  # the same voice is not a change
    assert (await ga.recv())["type"] == "session.updated"


async def test_session_limit(server: ServerHandle) -> None:
    first = await RawClient.connect(server.ws_url(index=1))
    try:
        async with websockets.connect(server.ws_url(index=1)) as second:
            event = validate_frame(await second.recv(), "ga")
            assert event["type"] == "error" and event["error"]["code"] == "session_limit_reached"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await first.alive()
    finally:
        await first.close()


def test_error_frames_are_plain_json() -> None:
    # the helper itself rejects frames of the wrong family: guard against a silently lenient checker
    with pytest.raises(AssertionError):
        validate_frame(json.dumps({"type": "response.audio.delta", "event_id": "event_1"}), "ga")


async def test_invalid_type(ga: RawClient) -> None:
    event = {"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": "late"}
    await ga.send(event)
    assert (await ga.error("invalid_type"))["param"] == "audio_end_ms"
    await ga.alive()


@pytest.mark.parametrize("beta", [False, True])
async def test_backend_failure_reports_code_and_message(server: ServerHandle, beta: bool) -> None:
    client = await RawClient.connect(server.ws_url(index=APP_FAILING), beta=beta)
    try:
        await client.send({"type": "conversation.item.create", "item": USER_TEXT})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "failed"
        assert done["status_details"] == {
            "type": "failed",
            "error": {"type": "server_error", "code": FAILURE_CODE, "message": FAILURE_MESSAGE},
        }
        audio = "response.audio.delta" if beta else "response.output_audio.delta"
        assert any(e["type"] == audio for e in events)  # it failed mid-response, after real audio
        assert not any(e["type"] == "error" for e in events)  # reported in response.done only
        await client.alive()
    finally:
        await client.close()


@pytest.mark.parametrize("beta", [False, True])
async def test_session_expires_with_an_error_then_close_1000(server: ServerHandle, beta: bool) -> None:
    client = await RawClient.connect(server.ws_url(index=APP_EXPIRING), beta=beta)
    # keep the session busy with a long spoken reply: expiry must still arrive, and nothing after it
    await client.send({"type": "conversation.item.create", "item": USER_TEXT})
    await client.send({"type": "response.create"})
    while True:
        event = await client.recv()
        if event["type"] == "error":
            break
    assert event["error"]["code"] == "session_expired"
    assert event["error"]["type"] == "invalid_request_error"
    minutes = f"{EXPIRING_SESSION_SECONDS / 60:g}"
    assert event["error"]["message"] == f"Your session hit the maximum duration of {minutes} minutes."
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_session_duration_config() -> None:
    from realtime.config import ServerConfig

    assert ServerConfig().max_session_seconds == 3600.0  # OpenAI GA: 60 minutes
    assert ServerConfig.from_env({"STREAMVOICE_MAX_SESSION_SECONDS": "90"}).max_session_seconds == 90.0
    with pytest.raises(ValueError):
        ServerConfig(max_session_seconds=0)


async def test_invalid_type_param_names_the_field_not_the_union_member(ga: RawClient) -> None:
    # voice is `str | Literal[...]` in the openai model: pydantic adds the member tag ("str") to the error
    # location, which must not leak into `param` (clients show it to the user)
    await ga.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": 1}}}}
    )
    error = await ga.error("invalid_type")
    assert error["param"] == "session.audio.output.voice"
    assert ".str" not in error["message"]
    await ga.alive()
