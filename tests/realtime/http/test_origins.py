"""Browser origins: which pages may open sessions, and the keyed HTTP routes."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from realtime.http.access import origin_allowed
from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.support.server_harness import ServerHandle


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "keyed", "expected"),
    [
        (None, "example.com", (), False, True),  # SDKs and servers send no Origin
        ("http://localhost:3000", "127.0.0.1:8000", (), False, True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", (), False, True),
        ("http://[::1]:8000", "[::1]:8000", (), False, True),
        ("http://192.168.1.5:8000", "192.168.1.5:8000", (), False, True),  # our page, by address
        ("http://192.168.1.5:9999", "192.168.1.5:8000", (), False, False),  # another port, another site
        ("https://evil.example", "127.0.0.1:8000", (), False, False),
        ("http://rebound.example:8000", "rebound.example:8000", (), False, False),  # DNS rebinding
        ("http://voice.lan:8000", "voice.lan:8000", (), True, True),  # same origin, and the key guards it
        ("https://app.example", "127.0.0.1:8000", ("https://app.example",), False, True),
        ("http://localhost:3000", "127.0.0.1:8000", ("https://app.example",), False, False),  # list only
        ("https://any.example", "127.0.0.1:8000", ("*",), False, True),
    ],
)
def test_origin_rules(
    origin: str | None, host: str, allowed: tuple[str, ...], keyed: bool, expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed, keyed=keyed) is expected


async def test_a_foreign_page_gets_origin_not_allowed_and_1008(server: ServerHandle) -> None:
    url = server.ws_url() + "?model=x"
    async with websockets.connect(url, origin=websockets.Origin("https://evil.example")) as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error" and event["error"]["code"] == "origin_not_allowed"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(url, origin=websockets.Origin("http://localhost:5173")) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_metrics_and_voices_need_the_key_health_and_favicon_do_not(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        for path in ("/metrics", "/v1/voices"):
            refused = await http.get(server.http_url(path, APP_KEYED))
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            wrong = await http.get(server.http_url(path, APP_KEYED), headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = await http.get(
                server.http_url(path, APP_KEYED), headers={"Authorization": f"Bearer {SERVER_KEY}"}
            )
            assert ok.status_code == 200
            assert (
                await http.get(server.http_url(path, APP_KEYED), headers={"api-key": SERVER_KEY})
            ).is_success
            assert (await http.get(server.http_url(path))).status_code == 200  # no key on the server: open
        health = await http.get(server.http_url("/health", APP_KEYED))
        assert health.status_code == 200 and health.json()["ready"] == "ready"
        assert {"rss_bytes", "tasks", "decoder_streams"} <= set(health.json())
        icon = await http.get(server.http_url("/favicon.ico"))
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
