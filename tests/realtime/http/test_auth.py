"""API keys (docs/PROTOCOL.md §1.2): every way a client presents a key, and the refusal of a bad one.

App `APP_KEYED` of the test server requires `SERVER_KEY`; app 0 has no key and accepts everyone.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from realtime.http.keys import Keys
from realtime.wire.handshake import negotiate
from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient, validate_frame

KEY_SUBPROTOCOL = "openai-insecure-api-key."
POLICY_VIOLATION = 1008


def _presentations(key: str) -> list[dict[str, Any]]:
    return [
        {"headers": {"Authorization": f"Bearer {key}"}},
        {"headers": {"api-key": key}},
        {"subprotocols": ["realtime", KEY_SUBPROTOCOL + key]},
        {"query": f"&api_key={key}"},
    ]


async def _connect(server: ServerHandle, query: str = "", **kwargs: Any) -> Any:
    headers = kwargs.get("headers") or {}
    protocols = [websockets.Subprotocol(p) for p in kwargs.get("subprotocols") or []] or None
    return await websockets.connect(
        server.ws_url(index=APP_KEYED) + "?model=m" + query,
        additional_headers=headers,
        subprotocols=protocols,
    )


@pytest.mark.parametrize("how", range(4), ids=["bearer", "api-key", "subprotocol", "query"])
async def test_each_way_of_presenting_the_key_is_accepted(server: ServerHandle, how: int) -> None:
    ws = await _connect(server, **_presentations(SERVER_KEY)[how])
    try:
        assert validate_frame(await ws.recv(), "ga")["type"] == "session.created"
        assert ws.subprotocol in (None, "realtime")  # the key entry is never echoed
        client = RawClient(ws, "ga")
        await client.alive()
    finally:
        await ws.close()


async def _refused(ws: Any) -> dict[str, Any]:
    event = validate_frame(await ws.recv(), "ga")
    assert event["type"] == "error", event
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == POLICY_VIOLATION
    assert closed.value.rcvd.reason == "invalid_api_key"
    error: dict[str, Any] = event["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    return error


@pytest.mark.parametrize("how", range(4), ids=["bearer", "api-key", "subprotocol", "query"])
async def test_a_wrong_key_gets_an_error_then_close_1008(server: ServerHandle, how: int) -> None:
    ws = await _connect(server, **_presentations("sk-wrong")[how])
    error = await _refused(ws)
    assert "sk-wrong" not in error["message"]  # never echo what the client sent


async def test_a_missing_key_gets_an_error_then_close_1008(server: ServerHandle) -> None:
    async with await _connect(server) as ws:
        error = await _refused(ws)
        assert error["message"].startswith("No API key")


async def test_the_bearer_header_wins_over_later_sources(server: ServerHandle) -> None:
    # order of docs/PROTOCOL.md §1.2: Authorization, api-key, subprotocol, query; a wrong bearer is not
    # rescued by the query
    ws = await _connect(server, f"&api_key={SERVER_KEY}", headers={"Authorization": "Bearer sk-wrong"})
    await _refused(ws)


async def test_beta_clients_get_the_refusal_in_their_dialect(server: ServerHandle) -> None:
    ws = await websockets.connect(
        server.ws_url(index=APP_KEYED), additional_headers={"OpenAI-Beta": "realtime=v1"}
    )
    event = validate_frame(await ws.recv(), "beta")
    assert event["type"] == "error" and event["error"]["code"] == "invalid_api_key"
    await ws.close()


async def test_official_sdk_with_the_key(server: ServerHandle) -> None:
    url = f"ws://127.0.0.1:{server.ports[APP_KEYED]}/v1"
    async with AsyncOpenAI(api_key=SERVER_KEY, websocket_base_url=url).realtime.connect(model="m") as conn:
        assert (await conn.recv()).type == "session.created"
    async with AsyncOpenAI(api_key="sk-wrong", websocket_base_url=url).realtime.connect(model="m") as conn:
        event = await conn.recv()
        assert event.type == "error" and event.error.code == "invalid_api_key"


async def test_http_routes_stay_open(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(server.http_url("/health", index=APP_KEYED))
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert SERVER_KEY not in health.text


async def test_without_a_server_key_everyone_is_accepted(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url(), headers={"Authorization": "Bearer anything"})
    await client.alive()
    await client.close()


def test_key_sources_in_order() -> None:
    both = {"authorization": "Bearer a", "api-key": "b"}
    assert negotiate(both, [KEY_SUBPROTOCOL + "c"], query={"api_key": "d"}).api_key == "a"
    assert negotiate({"api-key": "b"}, [KEY_SUBPROTOCOL + "c"], query={"api_key": "d"}).api_key == "b"
    assert negotiate({}, ["realtime", KEY_SUBPROTOCOL + "c"], query={"api_key": "d"}).api_key == "c"
    assert negotiate({}, [], query={"api_key": "d"}).api_key == "d"
    assert negotiate({}, []).api_key is None
    open_server, keyed = Keys(None, capacity=1), Keys("k", capacity=1)
    assert open_server.is_server_key(None) and open_server.is_server_key("x")
    assert keyed.is_server_key("k") and not keyed.is_server_key("k2") and not keyed.is_server_key(None)


def test_serve_flag_and_env_variable() -> None:
    import argparse

    from realtime.commands import serve
    from realtime.config import ServerConfig

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert serve.config_from_args(parser.parse_args(["--api-key", "k1"])).api_key == "k1"
    assert ServerConfig.from_env({"STREAMVOICE_API_KEY": "k2"}).api_key == "k2"
    assert ServerConfig.from_env({}).api_key is None
    assert "--api-key" in parser.format_help()
