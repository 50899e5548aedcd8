"""Hostile and failing calls: bad offers, calls that never connect, a flood of pending calls, peers that vanish,
unknown ids, full servers. Each gets a clear OpenAI-shaped error, and nothing stays held afterwards: no session
slot, no pending call, no task, no UDP socket (docs/PROTOCOL.md §11.5).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioice.ice
import httpx
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from realtime.bench.webrtc_client import CallClient, post_offer, without_candidates
from realtime.webrtc.offer import advertise
from tests.realtime.conftest import (
    APP_CALL_LIMITS,
    APP_KEYED,
    APP_LIMITED,
    CALL_CONNECT_TIMEOUT_S,
    MAX_PENDING_CALLS,
    SERVER_KEY,
)
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

GUARD_S = 30.0
PENDING_FLOOD = 100


def udp_sockets() -> int:
    """UDP sockets this process holds (the test server runs in it): its socket fds found in /proc/net/udp*."""
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table, encoding="ascii") as rows:
            inodes |= {row.split()[9] for row in list(rows)[1:]}
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        held += bool(match and match.group(1) in inodes)
    return held


async def health(server: ServerHandle, index: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(server.http_url("/health", index=index))).json()
        return data


async def until_health(
    server: ServerHandle, index: int, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll /health until ``done`` holds for it (a hang guard bounds it); return that answer."""
    async with asyncio.timeout(GUARD_S):
        while True:
            info = await health(server, index)
            if done(info):
                return info
            await asyncio.sleep(0.1)


async def until_idle(server: ServerHandle, index: int) -> dict[str, Any]:
    """Poll /health until no call and no session is left."""
    return await until_health(
        server, index, lambda info: info["sessions"] == 0 and info["calls"] == {"pending": 0, "active": 0}
    )


async def until_tasks_at_most(server: ServerHandle, index: int, most: int) -> None:
    """Poll /health until the server loop runs no more tasks than `most`.

    The count covers every task of the shared test server, so a keep-alive connection of an earlier request
    may still be winding down when a call has gone; a task the call leaked never goes and fails the guard.
    """
    try:
        await until_health(server, index, lambda info: info["tasks"] <= most)
    except TimeoutError:
        tasks = (await health(server, index))["tasks"]
        pytest.fail(f"the server still runs {tasks} tasks, {most} before the call")


@pytest.fixture
async def offer() -> AsyncIterator[str]:
    """A real browser-like offer (no candidates) from a peer that will never answer the server's checks."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    yield without_candidates(pc.localDescription.sdp)
    await pc.close()


async def _post(server: ServerHandle, index: int, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(server.http_url("/v1/realtime/calls", index=index), **kwargs)


def _error(response: httpx.Response) -> tuple[int, str, str | None, str]:
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in error["message"]
    return response.status_code, error["code"], error["param"], error["type"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("hello", "starts with 'v=0'"),
        ("", "starts with 'v=0'"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "exactly one audio section"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", "no Opus"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n", "sendonly"),
        ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n", "video"),
        ("v=0\r\nm=audio x\r\n", "could not be parsed"),
    ],
)
async def test_an_offer_that_cannot_be_a_call_is_refused(server: ServerHandle, body: str, why: str) -> None:
    before = await health(server, 0)
    response = await _post(server, 0, content=body, headers={"Content-Type": "application/sdp"})
    assert _error(response) == (400, "invalid_value", "sdp", "invalid_request_error")
    assert why in response.json()["error"]["message"]
    assert (await health(server, 0))["sessions"] == before["sessions"]


async def test_an_offer_aiortc_refuses_is_a_400_too(server: ServerHandle, offer: str) -> None:
    no_credentials = (
        "\r\n".join(line for line in offer.splitlines() if not line.startswith("a=ice-")) + "\r\n"
    )
    response = await _post(server, 0, content=no_credentials, headers={"Content-Type": "application/sdp"})
    assert _error(response)[:3] == (400, "invalid_value", "sdp")
    assert "ICE" in response.json()["error"]["message"]


async def test_the_request_shape_is_checked(server: ServerHandle, offer: str) -> None:
    as_json = await _post(server, 0, json={"sdp": offer})
    assert _error(as_json)[:2] == (400, "invalid_content_type")
    no_sdp = await _post(server, 0, files={"session": (None, b"{}", "application/json")})
    assert _error(no_sdp)[:3] == (400, "missing_required_parameter", "sdp")
    bad_session = await _post(server, 0, files={"sdp": (None, offer.encode()), "session": (None, b"{nope")})
    assert _error(bad_session)[:3] == (400, "invalid_json", "session")
    no_type = await _post(server, 0, files={"sdp": (None, offer.encode()), "session": (None, b"{}")})
    assert _error(no_type)[:3] == (400, "missing_required_parameter", "session.type")
    latin = await _post(server, 0, content=b"v=0\xff", headers={"Content-Type": "application/sdp"})
    assert _error(latin)[:3] == (400, "invalid_value", "sdp")
    huge = await _post(server, 0, content=b"v=0\r\n" * 40_000, headers={"Content-Type": "application/sdp"})
    assert _error(huge)[:2] == (413, "request_too_large")


async def test_a_call_that_never_connects_is_dropped_and_frees_everything(
    server: ServerHandle, offer: str
) -> None:
    await until_idle(server, APP_CALL_LIMITS)
    sockets, tasks = udp_sockets(), (await health(server, APP_CALL_LIMITS))["tasks"]
    response = await _post(
        server, APP_CALL_LIMITS, content=offer, headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 201 and response.headers["content-type"].startswith("application/sdp")
    assert "a=candidate:" in response.text  # the server's candidates are in the answer
    assert (await health(server, APP_CALL_LIMITS))["calls"]["pending"] == 1
    assert udp_sockets() > sockets
    await until_idle(server, APP_CALL_LIMITS)  # the caller never answers the checks: timed out
    assert udp_sockets() == sockets
    await until_tasks_at_most(server, APP_CALL_LIMITS, tasks)


async def test_a_flood_of_pending_calls_is_capped_and_fully_released(
    server: ServerHandle, offer: str
) -> None:
    await until_idle(server, APP_CALL_LIMITS)
    sockets, tasks = udp_sockets(), (await health(server, APP_CALL_LIMITS))["tasks"]
    posts = [
        post_offer(server.http_url("", index=APP_CALL_LIMITS), offer, wait_s=GUARD_S)
        for _ in range(PENDING_FLOOD)
    ]
    responses = await asyncio.gather(*posts)
    statuses = [response.status_code for response in responses]
    assert statuses.count(201) == MAX_PENDING_CALLS, statuses
    refused = [response for response in responses if response.status_code != 201]
    assert {_error(response) for response in refused} == {
        (503, "pending_calls_limit_reached", None, "server_error")
    }
    await asyncio.sleep(CALL_CONNECT_TIMEOUT_S)
    await until_idle(server, APP_CALL_LIMITS)
    assert udp_sockets() == sockets
    await until_tasks_at_most(server, APP_CALL_LIMITS, tasks)


async def test_a_peer_that_vanishes_is_dropped_when_consent_fails(
    server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice checks consent every ~5 s and gives up after 6 failures (about 30 s); shortened for the test
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    await until_idle(server, APP_CALL_LIMITS)
    sockets = udp_sockets()
    client = await CallClient.connect(server.http_url("", index=APP_CALL_LIMITS))
    try:
        await client.until("session.created")
        assert (await health(server, APP_CALL_LIMITS))["calls"]["active"] == 1
        # the caller's network goes away: no DTLS close, no SCTP abort, nothing more on the wire
        ice = client.pc.sctp.transport.transport  # type: ignore[union-attr]
        await ice._connection.close()
        await until_idle(server, APP_CALL_LIMITS)
    finally:
        await client.close()
    assert udp_sockets() == sockets


async def test_hangup_and_sip_controls_of_unknown_and_webrtc_calls(server: ServerHandle) -> None:
    base = server.http_url("/v1/realtime/calls")
    client = await CallClient.connect(server.http_url(""))
    try:
        async with httpx.AsyncClient() as http:
            for action in ("hangup", "accept", "reject", "refer"):
                unknown = await http.post(f"{base}/rtc_nope/{action}")
                assert _error(unknown) == (404, "not_found", "call_id", "invalid_request_error")
            for action in ("accept", "reject", "refer"):
                sip_only = await http.post(f"{base}/{client.call_id}/{action}")
                assert _error(sip_only) == (400, "invalid_value", "call_id", "invalid_request_error")
                assert "SIP" in sip_only.json()["error"]["message"]
    finally:
        await client.close()


async def test_a_call_counts_against_max_sessions(server: ServerHandle, offer: str) -> None:
    session = await RawClient.connect(server.ws_url(index=APP_LIMITED))  # the one session it admits
    try:
        response = await _post(
            server, APP_LIMITED, content=offer, headers={"Content-Type": "application/sdp"}
        )
        assert _error(response) == (503, "session_limit_reached", None, "server_error")
    finally:
        await session.close()
    await until_idle(server, APP_LIMITED)
    client = await CallClient.connect(server.http_url("", index=APP_LIMITED))  # the slot is free again
    try:
        await client.until("session.created")
        async with websockets.connect(server.ws_url(index=APP_LIMITED)) as full:  # ... and the call holds it
            assert json.loads(await full.recv())["error"]["code"] == "session_limit_reached"
    finally:
        await client.close()


async def test_the_server_key_guards_the_call_routes(server: ServerHandle, offer: str) -> None:
    refused = await _post(server, APP_KEYED, content=offer, headers={"Content-Type": "application/sdp"})
    assert _error(refused)[:2] == (401, "invalid_api_key")
    client = await CallClient.connect(server.http_url("", index=APP_KEYED), api_key=SERVER_KEY)
    try:
        await client.until("session.created")
        async with httpx.AsyncClient() as http:
            url = server.http_url(f"/v1/realtime/calls/{client.call_id}/hangup", index=APP_KEYED)
            assert (await http.post(url)).status_code == 401
            assert (
                await http.post(url, headers={"Authorization": f"Bearer {SERVER_KEY}"})
            ).status_code == 200
    finally:
        await client.close()


def test_the_advertised_address_is_added_beside_each_host_candidate() -> None:
    answer = (
        "v=0\r\n"
        "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
        "a=candidate:def 1 udp 2130706431 fd00::5 40001 typ host\r\n"
        "a=candidate:ghi 1 udp 1694498815 203.0.113.9 40002 typ srflx raddr 10.0.0.5 rport 40000\r\n"
    )
    lines = advertise(answer, "198.51.100.7").splitlines()
    assert "a=candidate:abc9 1 udp 2130706430 198.51.100.7 40000 typ host" in lines
    assert len([line for line in lines if "198.51.100.7" in line]) == 1  # not for IPv6, not for srflx


async def test_a_server_without_a_network_interface_says_so(
    server: ServerHandle, offer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [])  # only loopback here
    await until_idle(server, APP_CALL_LIMITS)
    sockets = udp_sockets()
    response = await _post(
        server, APP_CALL_LIMITS, content=offer, headers={"Content-Type": "application/sdp"}
    )
    assert _error(response) == (500, "webrtc_unavailable", None, "server_error")
    assert "network interface" in response.json()["error"]["message"]
    await until_idle(server, APP_CALL_LIMITS)
    assert udp_sockets() == sockets
