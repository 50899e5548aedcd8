"""The access layer (realtime/http/access.py, docs/PROTOCOL.md §1.7), walked over every route of the app.

`test_every_route_follows_the_access_rules` enumerates ``app.routes`` (mounts included) of an app built like the
test server's and checks each route over the wire on the main test server: closed without the key unless listed
open, a foreign origin refused, a write without a JSON or multipart body refused, a CORS preflight answered for
an allowed origin. The other tests pin the single rules: a cross-site voice upload, CORS on answers, a route
added later, the preflight of a route no module serves yet (WebRTC calls).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from realtime.http.access import (
    ALLOWED_HEADERS,
    CALLS_PATH,
    DEMO_ROUTES,
    OPEN_ROUTES,
    REALTIME_ROUTES,
    Door,
    door_of,
    grant_of,
)
from realtime.http.app import create_app
from realtime.http.keys import Keys
from realtime.wire.session_config import SessionConfig
from tests.realtime.conftest import APP_KEYED, SERVER_KEY
from tests.support.server_harness import RuntimeView, ServerHandle
from tests.support.wire_check import validate_frame

ALLOWED_ORIGIN = "http://localhost:5173"  # a loopback page: allowed without --allowed-origins
FOREIGN_ORIGIN = "https://evil.example"
BEARER = {"Authorization": f"Bearer {SERVER_KEY}"}
WRITES = ("POST", "PUT", "PATCH")
POLICY_VIOLATION = 1008
SAMPLE_PARAM = "x"  # stands for every path parameter ({name}, {model:path})


@dataclass(frozen=True)
class Walked:
    """One route of the app: its full path template, what it speaks, and its methods."""

    template: str
    websocket: bool
    methods: tuple[str, ...]

    @property
    def path(self) -> str:
        return re.sub(r"\{[^}]+\}", SAMPLE_PARAM, self.template)


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[Walked]:
    for route in routes:
        if isinstance(route, Mount):
            here = prefix + route.path
            if route.routes:
                yield from _walk(list(route.routes), here)
            else:  # an app mounted whole: the demo's static files
                yield Walked(here + "/", False, ("GET",))
        elif isinstance(route, WebSocketRoute):
            yield Walked(prefix + route.path, True, ())
        elif isinstance(route, Route):
            methods = tuple(sorted(set(route.methods or ("GET",)) - {"HEAD"}))
            yield Walked(prefix + route.path, False, methods)
        else:
            pytest.fail(f"a route kind the access test does not know: {route!r}")


@pytest.fixture(scope="module")
def walked(server: ServerHandle) -> list[Walked]:
    """Every route of an app built as the test server's (the demo folder included)."""
    assert server.runtime is not None
    app = create_app(RuntimeView(server.runtime, api_key=SERVER_KEY))
    found = list(_walk(list(app.routes)))
    templates = {route.template for route in found}
    # the lists in access.py name real routes (WebRTC calls are served by a module still to come)
    assert OPEN_ROUTES <= templates, OPEN_ROUTES - templates
    assert REALTIME_ROUTES - {CALLS_PATH} <= templates, REALTIME_ROUTES - templates
    assert DEMO_ROUTES <= templates
    assert len(found) >= 20, found
    return found


async def _http(
    http: httpx.AsyncClient, server: ServerHandle, method: str, path: str, index: int, **kwargs: Any
) -> httpx.Response:
    return await http.request(method, server.http_url(path, index), **kwargs)


def _error(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["code"])


async def _socket_error(url: str, **kwargs: Any) -> tuple[str, int]:
    async with websockets.connect(url + "?model=m", **kwargs) as ws:
        event = validate_frame(await ws.recv(), "ga")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return (event["error"]["code"] if event["type"] == "error" else event["type"]), closed.value.rcvd.code


async def test_every_route_follows_the_access_rules(server: ServerHandle, walked: list[Walked]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for route in walked:
            door = door_of(route.template)
            if route.websocket:
                await _check_socket(server, route, door)
                continue
            for method in route.methods:
                await _check_http(http, server, route, method, door)


async def _check_http(
    http: httpx.AsyncClient, server: ServerHandle, route: Walked, method: str, door: Door
) -> None:
    where = f"{method} {route.template}"
    json_body = {"content": b"{}", "headers": {"Content-Type": "application/json"}}
    bare = await _http(http, server, method, route.path, APP_KEYED, **json_body)
    if door is Door.OPEN:
        assert bare.status_code not in (401, 403), where
        foreign = await _http(http, server, method, route.path, APP_KEYED, headers={"Origin": FOREIGN_ORIGIN})
        assert foreign.status_code != 403, where  # public reads: not refused, and no CORS for foreign pages
        assert "access-control-allow-origin" not in foreign.headers, where
        return
    # closed by default: no key, no entry (the demo's door too, without --public-demo)
    assert bare.status_code == 401 and _error(bare) == "invalid_api_key", where
    keyed = await _http(http, server, method, route.path, APP_KEYED, **{**json_body, "headers": {**BEARER}})
    assert keyed.status_code not in (401, 403), (where, keyed.text)
    # a page of another site is refused before anything runs, key or not
    foreign_headers = {**BEARER, "Origin": FOREIGN_ORIGIN, "Content-Type": "application/json"}
    foreign = await _http(http, server, method, route.path, APP_KEYED, headers=foreign_headers, content=b"{}")
    assert foreign.status_code == 403 and _error(foreign) == "origin_not_allowed", where
    assert "access-control-allow-origin" not in foreign.headers
    if method in WRITES:  # no JSON or multipart body: a form post cannot write
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {**BEARER, **({"Content-Type": content_type} if content_type else {})}
            form = await _http(http, server, method, route.path, APP_KEYED, headers=headers, content=b"a=b")
            assert form.status_code == 400 and _error(form) == "unsupported_content_type", (
                where,
                content_type,
            )
    # an allowed page gets its preflight answered, without a key
    preflight = await _http(
        http,
        server,
        "OPTIONS",
        route.path,
        APP_KEYED,
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    _assert_preflight(preflight, method, where)


def _assert_preflight(preflight: httpx.Response, method: str, where: str) -> None:
    assert preflight.status_code == 204, (where, preflight.text)
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert method in preflight.headers["access-control-allow-methods"]
    allowed = {name.strip() for name in preflight.headers["access-control-allow-headers"].split(",")}
    assert set(ALLOWED_HEADERS) <= allowed, where
    assert "Location" in preflight.headers["access-control-expose-headers"]
    assert int(preflight.headers["access-control-max-age"]) > 0
    assert "Origin" in preflight.headers["vary"]


async def _check_socket(server: ServerHandle, route: Walked, door: Door) -> None:
    url = server.ws_url(route.path, APP_KEYED)
    assert door is Door.REALTIME, route
    assert await _socket_error(url) == ("invalid_api_key", POLICY_VIOLATION)
    foreign = await _socket_error(url, additional_headers=BEARER, origin=websockets.Origin(FOREIGN_ORIGIN))
    assert foreign == ("origin_not_allowed", POLICY_VIOLATION)
    async with websockets.connect(url + "?model=m", additional_headers=BEARER) as ws:
        assert validate_frame(await ws.recv(), "ga")["type"] == "session.created"


async def test_a_cross_origin_voice_upload_without_a_key_is_refused(server: ServerHandle) -> None:
    # issue 25: on a server without --api-key a page of another site stored a voice; now it never reaches the
    # route, whatever body it sends
    files = {"file": ("v.wav", b"RIFF0000WAVE")}
    async with httpx.AsyncClient() as http:
        upload = await http.post(
            server.http_url("/v1/audio/voices"),
            data={"name": "evil"},
            files=files,
            headers={"Origin": FOREIGN_ORIGIN},
        )
        assert upload.status_code == 403 and _error(upload) == "origin_not_allowed"
        names = (await http.get(server.http_url("/v1/audio/voices"))).json()["data"]
    assert "evil" not in {voice["name"] for voice in names}


async def test_allowed_pages_read_answers_and_refusals(server: ServerHandle) -> None:
    async with httpx.AsyncClient() as http:
        voices = await http.get(server.http_url("/v1/audio/voices"), headers={"Origin": ALLOWED_ORIGIN})
        refused = await http.get(
            server.http_url("/v1/audio/voices", APP_KEYED), headers={"Origin": ALLOWED_ORIGIN}
        )
        health = await http.get(server.http_url("/health"), headers={"Origin": ALLOWED_ORIGIN})
    for response in (voices, refused, health):
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert response.headers["access-control-expose-headers"] == "Location"
        assert "Origin" in response.headers["vary"]
    assert voices.status_code == 200 and refused.status_code == 401


async def test_a_write_without_a_body_needs_no_content_type(server: ServerHandle) -> None:
    # OpenAI's own example: curl -X POST .../hangup with only the key; a body must declare its type
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a=b"

    async with httpx.AsyncClient() as http:
        bodiless = await http.post(server.http_url("/v1/audio/speech", APP_KEYED), headers=BEARER)
        chunked = await http.post(
            server.http_url("/v1/audio/speech", APP_KEYED), headers=BEARER, content=chunks()
        )
    assert bodiless.status_code == 400 and _error(bodiless) == "invalid_json"  # the route read it
    assert chunked.status_code == 400 and _error(chunked) == "unsupported_content_type"


async def test_a_preflight_from_a_foreign_page_is_refused(server: ServerHandle) -> None:
    headers = {"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient() as http:
        refused = await http.options(server.http_url("/v1/audio/speech"), headers=headers)
    assert refused.status_code == 403 and _error(refused) == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers


async def test_the_webrtc_preflight_is_answered_before_its_route_exists(server: ServerHandle) -> None:
    # what @openai/agents-realtime sends from a browser before POST /v1/realtime/calls (issue 26)
    headers = {
        "Origin": ALLOWED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-openai-agents-sdk,x-stainless-os",
    }
    async with httpx.AsyncClient() as http:
        preflight = await http.options(server.http_url(CALLS_PATH, APP_KEYED), headers=headers)
    _assert_preflight(preflight, "POST", CALLS_PATH)
    assert "x-stainless-os" in preflight.headers["access-control-allow-headers"]


def _in_process_app(server: ServerHandle, **changes: Any) -> tuple[Starlette, Keys]:
    """An app on the test runtime, called in-process: only for answers the access layer gives itself (and
    stand-in routes), so nothing touches the runtime from this event loop."""
    assert server.runtime is not None
    view = RuntimeView(server.runtime, **changes)
    keys = Keys(view.config.api_key, capacity=8)
    return create_app(view, keys=keys), keys


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")


async def test_a_route_added_later_is_closed_until_listed(server: ServerHandle) -> None:
    app, _ = _in_process_app(server, api_key=SERVER_KEY)

    async def handler(request: Request) -> Response:
        return JSONResponse({"reached": True})

    api = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/v1")
    api.routes.append(Route("/brand-new", handler, methods=["GET"]))
    app.router.routes.insert(0, Route("/also-new", handler))
    async with _client(app) as http:
        for path in ("/v1/brand-new", "/also-new"):
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, headers=BEARER)).json() == {"reached": True}


async def test_webrtc_calls_take_an_ephemeral_key_and_read_its_grant(server: ServerHandle) -> None:
    # a stand-in for the WebRTC module's POST /v1/realtime/calls: the seam it will use is `grant_of`
    app, keys = _in_process_app(server, api_key=SERVER_KEY)

    async def calls(request: Request) -> Response:
        grant = grant_of(request.scope)
        instructions = grant.session.instructions if grant.session is not None else None
        return JSONResponse({"ephemeral": grant.ephemeral, "instructions": instructions}, status_code=201)

    api = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/v1")
    api.routes.insert(0, Route("/realtime/calls", calls, methods=["POST"]))  # ahead of the real one
    assert server.runtime is not None
    preset = SessionConfig(model="m", voice=server.runtime.voices.default, instructions="Be brief.")
    value, _ = keys.mint(60, preset)
    sdp = {"Content-Type": "application/sdp", "Origin": ALLOWED_ORIGIN}
    async with _client(app) as http:
        answer = await http.post(
            CALLS_PATH, content=b"v=0\r\n", headers={**sdp, "Authorization": f"Bearer {value}"}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json() == {"ephemeral": True, "instructions": "Be brief."}
        assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert (await http.post(CALLS_PATH, content=b"v=0\r\n", headers=sdp)).status_code == 401
        server_key = await http.post(CALLS_PATH, content=b"v=0\r\n", headers={**sdp, **BEARER})
        assert server_key.json() == {"ephemeral": False, "instructions": None}
        # application/sdp is a body type of this route only
        speech = await http.post("/v1/audio/speech", content=b"v=0\r\n", headers={**sdp, **BEARER})
        assert speech.status_code == 400 and _error(speech) == "unsupported_content_type"


def test_the_door_lists_are_disjoint() -> None:
    assert not (OPEN_ROUTES & REALTIME_ROUTES or OPEN_ROUTES & DEMO_ROUTES or REALTIME_ROUTES & DEMO_ROUTES)
    assert door_of(None) is Door.KEYED and door_of("/v1/anything-new") is Door.KEYED
