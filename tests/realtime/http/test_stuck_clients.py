"""Clients that stop reading, vanish or flood: each session ends and frees its slot within a bounded time.

The server here admits ONE session, so a leaked slot shows at once: the next client would be refused with
``session_limit_reached``. Timeouts are small (send 1 s, keepalive ping 1 s + 1 s) so each case settles in
seconds; the production defaults are in README "Security and limits".
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from realtime.config import ServerConfig
from realtime.http.ws_transport import CLOSE_WAIT_S
from tests.support.raw_socket import OP_TEXT, RawSocketClient
from tests.support.server_harness import ServerHandle, start_server
from tests.support.wire_check import RawClient

SEND_TIMEOUT_S = 1.0
PING_S = 1.0
# a stuck peer is found by the send timeout or the keepalive ping, then its close gets CLOSE_WAIT_S
FREED_WITHIN_S = SEND_TIMEOUT_S + 2 * PING_S + CLOSE_WAIT_S + 2.0
BIG_TEXT = "x" * (1024 * 1024)  # ~1 MB: its item.added echo alone overflows the client's window


@pytest.fixture(scope="module")
def guarded(t2w_cache: Path) -> Iterator[ServerHandle]:
    config = ServerConfig(
        backend="synthetic",
        synthetic_tokens_per_second=2000.0,
        cache_dir=t2w_cache,
        max_sessions=1,
        send_timeout=SEND_TIMEOUT_S,
        ws_ping_interval=PING_S,
        ws_ping_timeout=PING_S,
        max_out_of_band_responses=2,
    )
    handle = start_server(config)
    yield handle
    handle.stop()


def _health(server: ServerHandle) -> dict[str, Any]:
    with urllib.request.urlopen(server.http_url("/health"), timeout=10) as reply:
        data: dict[str, Any] = json.loads(reply.read())
    return data


def _wait_for_sessions(server: ServerHandle, count: int, within: float) -> float:
    """Seconds until /health shows ``count`` sessions; fails after ``within``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if _health(server)["sessions"] == count:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"/health still shows {_health(server)['sessions']} session(s) after {within} s")


def _flood(client: RawSocketClient) -> None:
    """What a hostile or unlucky client does before it stops reading: big items and many responses."""
    for _ in range(3):
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": BIG_TEXT}]}
        client.send_event({"type": "conversation.item.create", "item": item})
    client.send_event({"type": "response.create"})
    for _ in range(30):
        client.send_event({"type": "response.create", "response": {"conversation": "none"}})


async def _served(server: ServerHandle) -> None:
    """A new client gets a session and a complete response: the slot and the decoder came back."""
    client = await RawClient.connect(server.ws_url())
    try:
        await client.alive()
        await client.send({"type": "response.create", "response": {"conversation": "none"}})
        done = (await client.until("response.done"))[-1]
        assert done["response"]["status"] == "completed"
    finally:
        await client.close()


async def _leaves_and_slot_frees(server: ServerHandle, leave: str) -> float:
    client = await asyncio.to_thread(RawSocketClient, server.port)
    await asyncio.to_thread(_flood, client)
    await asyncio.sleep(0.5)  # the server is now blocked writing to a client that does not read
    if leave == "reset":
        client.reset()
    elif leave == "fin":
        client.half_close()
    started = time.monotonic()
    try:
        await asyncio.to_thread(_wait_for_sessions, server, 0, FREED_WITHIN_S)
        return time.monotonic() - started
    finally:
        client.close()


@pytest.mark.parametrize("leave", ["silent", "reset", "fin"])
async def test_a_stuck_client_frees_its_slot_and_the_next_client_is_served(
    guarded: ServerHandle, leave: str
) -> None:
    held = await _leaves_and_slot_frees(guarded, leave)
    assert held < FREED_WITHIN_S
    await _served(guarded)
    health = await asyncio.to_thread(_health, guarded)
    assert health["decoder_streams"]["live"] == 0  # every response of the stuck session released its stream


async def test_a_slow_reader_is_served_or_closed_and_never_leaks(guarded: ServerHandle) -> None:
    ws = await websockets.connect(guarded.ws_url() + "?model=x", max_size=None, max_queue=1)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": BIG_TEXT}]}
    for _ in range(3):
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    received = 0
    close_code = None
    deadline = time.monotonic() + 4 * SEND_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            # bounded: a loaded machine may let the reader catch up with a short reply, and then the open
            # session has nothing more to send (that is "still served", not a hang)
            await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01))
            received += 1
            await asyncio.sleep(0.05)  # ~20 frames a second: far behind the server
    except TimeoutError:
        pass
    except websockets.ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd else None
    assert received > 0
    assert close_code in (None, 1008, 1011)  # still served (backpressure), or closed with a clear code
    await ws.close()
    await asyncio.to_thread(_wait_for_sessions, guarded, 0, FREED_WITHIN_S)
    await _served(guarded)


async def test_out_of_band_flood_is_capped_with_an_error(guarded: ServerHandle) -> None:
    client = await RawClient.connect(guarded.ws_url())
    try:
        for index in range(30):
            await client.send(
                {"type": "response.create", "event_id": f"evt_{index}", "response": {"conversation": "none"}}
            )
        in_progress = most = refused = done = 0
        while done < 30 - refused:
            event = await client.recv()
            if event["type"] == "response.created":
                in_progress += 1
                most = max(most, in_progress)
            elif event["type"] == "response.done":
                in_progress -= 1
                done += 1
            elif event["type"] == "error":
                assert event["error"]["code"] == "too_many_out_of_band_responses", event
                assert event["error"]["event_id"].startswith("evt_")
                refused += 1
        assert most <= 2
        assert refused >= 20
        await client.alive()
    finally:
        await client.close()


def test_non_utf8_text_frame_closes_1007_and_frees_the_slot(guarded: ServerHandle) -> None:
    client = RawSocketClient(guarded.port, rcvbuf=65536)
    try:
        client.send_frame(OP_TEXT, b"\xff\xfe{not utf-8")
        _wait_for_sessions(guarded, 0, FREED_WITHIN_S)
    finally:
        client.close()


async def test_binary_frames_get_an_error_and_the_session_lives(guarded: ServerHandle) -> None:
    client = await RawClient.connect(guarded.ws_url())
    try:
        await client.send_raw(b"\x00\x01binary")
        await client.error("invalid_event")
        await client.alive()
    finally:
        await client.close()
