"""HTTP routes and the WebSocket handshake: health, metrics, voices, demo page, paths and subprotocols."""

from __future__ import annotations

import httpx
import websockets

from tests.realtime.conftest import APP_FORCED_BETA
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient, validate_frame


async def test_health_says_what_runs(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        body = (await http.get(server.http_url("/health"))).json()
    assert body["status"] == "ok" and body["model"] == "step-audio-2-mini"
    assert body["backend"] == "synthetic" and body["embedded_demo"] is True


async def test_voices(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        body = (await http.get(server.http_url("/v1/voices"))).json()
    assert body["default"] == "default" and "default" in body["voices"]
    assert body["embedded_demo"] is True


async def test_metrics_count_sessions_and_errors(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url())
    await client.send({"type": "response.cancel"})
    await client.error("response_cancel_not_active")
    async with httpx.AsyncClient() as http:
        response = await http.get(server.http_url("/metrics"))
    await client.close()
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "streamvoice_active_sessions" in text
    assert 'streamvoice_errors_total{code="response_cancel_not_active"}' in text


async def test_metrics_time_to_first_transcript_and_delta_send(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url())
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await client.send({"type": "conversation.item.create", "item": item})
    await client.send({"type": "response.create"})
    await client.until("response.done")
    await client.close()
    async with httpx.AsyncClient() as http:
        text = (await http.get(server.http_url("/metrics"))).text
    for family in (
        "time_to_first_transcript_seconds",
        "audio_delta_send_seconds",
        "time_to_first_audio_seconds",
    ):
        count = next(line for line in text.splitlines() if line.startswith(f"streamvoice_{family}_count"))
        assert float(count.split()[-1]) >= 1, count


async def test_demo_page_is_served(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(server.http_url("/"))
    assert response.status_code == 200 and "<html" in response.text.lower()


async def test_realtime_path_without_v1(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url("/realtime"))
    await client.alive()
    await client.close()


async def test_browser_subprotocols_echo_realtime_never_the_key(server: ServerHandle) -> None:
    offered = ["realtime", "openai-insecure-api-key.sk-secret"]
    client = await RawClient.connect(server.ws_url(), subprotocols=offered)
    assert client.ws.subprotocol == "realtime"
    await client.close()


async def test_beta_by_subprotocol(server: ServerHandle) -> None:
    offered = ["realtime", "openai-insecure-api-key.k", "openai-beta.realtime-v1"]
    client = await RawClient.connect(server.ws_url(), subprotocols=offered)
    assert client.dialect == "beta" and client.ws.subprotocol == "realtime"
    await client.alive()  # a flat beta session.update without session.type
    await client.close()


async def test_no_subprotocol_offered_none_selected(server: ServerHandle) -> None:
    async with websockets.connect(
        server.ws_url() + "?model=x&foo=ignored"
    ) as ws:  # call_id: PROTOCOL.md §11.4
        assert ws.subprotocol is None
        event = validate_frame(await ws.recv(), "ga")
        assert event["type"] == "session.created"
        assert event["session"]["model"] == "step-audio-2-mini"  # we report our served model


async def test_server_flag_forces_the_beta_dialect(server: ServerHandle) -> None:
    async with websockets.connect(server.ws_url(index=APP_FORCED_BETA)) as ws:  # no beta header
        assert validate_frame(await ws.recv(), "beta")["type"] == "session.created"
        assert validate_frame(await ws.recv(), "beta")["type"] == "conversation.created"
        client = RawClient(ws, "beta")
        await client.alive()


def test_dialect_config() -> None:
    import pytest

    from realtime.config import ServerConfig

    assert ServerConfig().dialect == "auto"
    assert ServerConfig.from_env({"STREAMVOICE_DIALECT": "ga"}).dialect == "ga"
    with pytest.raises(ValueError):
        ServerConfig.from_env({"STREAMVOICE_DIALECT": "v2"})
