"""The sideband of a call (``/v1/realtime?call_id=``) and its hangup (docs/PROTOCOL.md §11.4).

An aiortc caller places the call as a browser would; a raw WebSocket client attaches to it the way an
application server does with OpenAI's ``call_id``, sees the call's events, configures the session, answers a
tool call, and ends the call with ``POST /v1/realtime/calls/{call_id}/hangup``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from realtime.bench.webrtc_client import CallClient
from tests.realtime.conftest import APP_KEYED, APP_TOOL_CALL, SERVER_KEY, TOOL_CALL_ARGUMENTS
from tests.realtime.session.test_tool_calls import WEATHER_TOOL
from tests.realtime.webrtc.test_calls import ga, silence_ms, speech_pcm
from tests.support.server_harness import ServerHandle

GUARD_S = 30.0


class Sideband:
    """A raw WebSocket attached to a call; validates every event it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def attach(cls, server: ServerHandle, call_id: str, index: int = 0) -> Sideband:
        ws = await websockets.connect(server.ws_url(index=index) + f"?call_id={call_id}")
        return cls(ws)

    def send(self, event: dict[str, Any]) -> Any:
        return self.ws.send(json.dumps(event))

    async def until(self, kind: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(GUARD_S):
            while not events or events[-1]["type"] != kind:
                events.append(ga(await self.ws.recv()))
        self.received += events
        return events


@pytest.fixture
async def caller(server: ServerHandle) -> AsyncIterator[CallClient]:
    client = await CallClient.connect(server.http_url("", index=APP_TOOL_CALL), parse=ga)
    yield client
    await client.close()


async def test_a_sideband_steers_a_spoken_call_and_answers_its_tool_call(
    server: ServerHandle, caller: CallClient
) -> None:
    await caller.until("session.created")
    sideband = await Sideband.attach(server, caller.call_id, APP_TOOL_CALL)
    try:
        update = {"type": "realtime", "instructions": "Use the tools.", "tools": [WEATHER_TOOL]}
        await sideband.send({"type": "session.update", "session": update})
        updated = (await sideband.until("session.updated"))[-1]
        # the caller sees the same event (one session, every connection gets its events)
        assert (await caller.until("session.updated"))[-1]["event_id"] == updated["event_id"]
        assert [tool["name"] for tool in updated["session"]["tools"]] == ["get_weather"]

        await caller.speak(silence_ms(300) + speech_pcm() + silence_ms(1500))  # a spoken turn, server VAD
        events = await sideband.until("response.done")
        kinds = [event["type"] for event in events]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed")
        call = next(item for item in events[-1]["response"]["output"] if item["type"] == "function_call")
        assert (call["name"], call["arguments"]) == ("get_weather", TOOL_CALL_ARGUMENTS)

        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "clear"}'}
        await sideband.send({"type": "conversation.item.create", "item": output})
        await sideband.send({"type": "response.create"})
        done = (await sideband.until("response.done"))[-1]["response"]
        assert done["status"] == "completed"
        await caller.until_heard(100)  # the answer to the tool's output plays on the caller's track
        await caller.until("response.done")  # the tool call's
        await caller.until("response.done")  # the answer's
        assert {event["event_id"] for event in sideband.received} <= {
            event["event_id"] for event in caller.received
        }
        assert "response.output_audio.delta" not in [event["type"] for event in sideband.received]
    finally:
        await sideband.ws.close()


async def test_hangup_ends_the_call_and_closes_its_sidebands(
    server: ServerHandle, caller: CallClient
) -> None:
    await caller.until("session.created")
    sideband = await Sideband.attach(server, caller.call_id, APP_TOOL_CALL)
    closed = asyncio.Event()
    caller.channel.on("close", closed.set)
    url = server.http_url(f"/v1/realtime/calls/{caller.call_id}/hangup", index=APP_TOOL_CALL)
    async with httpx.AsyncClient() as http:
        response = await http.post(url)
        assert response.status_code == 200
        async with asyncio.timeout(GUARD_S):
            with pytest.raises(websockets.ConnectionClosedOK):
                while True:
                    await sideband.ws.recv()
            await closed.wait()  # the server closed the peer connection
        again = await http.post(url)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


async def test_a_sideband_for_an_unknown_call_is_refused_with_404(server: ServerHandle) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws_url() + "?call_id=rtc_nope")
    response = refused.value.response
    assert response.status_code == 404
    error = json.loads(response.body)["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "not_found", "call_id")


async def test_an_ephemeral_key_places_a_call_with_its_session_but_cannot_attach_a_sideband(
    server: ServerHandle,
) -> None:
    """A browser's key (minted by its application server) places the call and the call starts from the
    session bound to the key; the sideband is the application server's door: it takes the server's key only
    (docs/PROTOCOL.md §11.4, §8.3 R72)."""
    base = server.http_url("", index=APP_KEYED)
    mint = {"session": {"type": "realtime", "instructions": "Be brief."}}
    async with httpx.AsyncClient(timeout=GUARD_S) as http:
        minted = await http.post(
            base + "/v1/realtime/client_secrets",
            json=mint,
            headers={"Authorization": f"Bearer {SERVER_KEY}"},
        )
    assert minted.status_code == 200, minted.text
    ephemeral = minted.json()["value"]
    caller = await CallClient.connect(base, api_key=ephemeral, parse=ga)
    try:
        created = (await caller.until("session.created"))[-1]
        assert created["session"]["instructions"] == "Be brief."
        url = server.ws_url(index=APP_KEYED) + f"?call_id={caller.call_id}"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {ephemeral}"}) as ws:
            error = ga(await asyncio.wait_for(ws.recv(), GUARD_S))
            assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key", error
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), GUARD_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # the server's key attaches, and the call went on meanwhile
        server_key = {"Authorization": f"Bearer {SERVER_KEY}"}
        async with websockets.connect(url, additional_headers=server_key) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            async with asyncio.timeout(GUARD_S):
                while ga(await ws.recv())["type"] != "session.updated":
                    pass
    finally:
        await caller.close()
