"""One ASGI layer for who may call what: API keys, browser origins, content types and CORS, on every route.

Every request and WebSocket passes here before a route runs (docs/PROTOCOL.md §1.7). The route it reaches
(found the way Starlette's router finds it) opens one of four doors:

- open (`OPEN_ROUTES`): the health checks, the favicon and the demo page's files: no key; a foreign Origin is
  not refused there (they are public reads), only left without CORS headers.
- realtime (`REALTIME_ROUTES`): the Realtime WebSocket, WebRTC calls and ``/v1/voices``: the server's key or
  an ephemeral key (realtime/http/keys.py); the route reads the resulting `Grant` with `grant_of`.
- demo (`DEMO_ROUTES`): the demo page's own key minting: no key when the server has none or runs with
  ``--public-demo``, and pages of this server only (the origin rule as for a server without a key).
- keyed: every other route, including any route added later: the server's key, when it has one.

Past the open door, in order: a request carrying an ``Origin`` that `origin_allowed` refuses gets 403
``origin_not_allowed``; a key that does not open the door gets 401 ``invalid_api_key``; a ``POST``, ``PUT``
or ``PATCH`` with a body must say ``application/json`` or ``multipart/form-data`` (``application/sdp`` too on
``/v1/realtime/calls``), else 400 ``unsupported_content_type``, so a cross-site HTML form (form-encoded or
``text/plain``) cannot write. A bodiless write (OpenAI's ``curl -X POST .../hangup``) has nothing to declare;
``DELETE`` needs no body, and no browser sends it cross-site without a preflight.

For an allowed origin the layer speaks CORS: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
is answered here for any path, routed or not (so a route another module adds later already has one), and
every answer, refusals included, carries ``Access-Control-Allow-Origin`` and exposes ``Location``.

A WebSocket is refused the way docs/PROTOCOL.md §1.2 describes: accepted, one ``error`` event in its dialect,
then close 1008, because a browser cannot read the status of a refused upgrade.

Not Starlette's CORSMiddleware: its origin check is a list or a pattern, while ours must be the WebSocket's
rule itself (`origin_allowed`: loopback pages, this server's own page by address, the key that guards a page
under a DNS name), which needs the ``Host`` header; and it passes a request from a refused origin on to the
route (only the answer lacks CORS headers), where a cross-site write must be refused before it runs.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from realtime.errors import (
    CLOSE_POLICY_VIOLATION,
    CODE_INVALID_API_KEY,
    CODE_ORIGIN_NOT_ALLOWED,
    INVALID_REQUEST,
    ErrorReport,
    quote,
)
from realtime.http.errors import CODE_UNSUPPORTED_CONTENT_TYPE, error_body
from realtime.http.keys import Grant, KeyRefused, Keys, refusal_message
from realtime.http.ws_transport import WebSocketTransport
from realtime.metrics import Metrics
from realtime.wire.handshake import Dialect, api_key_from_headers, negotiate

CALLS_PATH = "/v1/realtime/calls"  # WebRTC calls (issue 26): routed by another module, opened here
DEMO_CLIENT_SECRETS_PATH = "/demo/client_secrets"
OPEN_ROUTES = frozenset({"/health", "/health/live", "/health/ready", "/favicon.ico", "/"})  # "/": demo files
REALTIME_ROUTES = frozenset({"/v1/realtime", "/realtime", CALLS_PATH, "/v1/voices"})
DEMO_ROUTES = frozenset({DEMO_CLIENT_SECRETS_PATH})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
BODY_TYPES = ("application/json", "multipart/form-data")
SDP_TYPE = "application/sdp"
# what a page may send: the openai SDKs' key headers, the Agents SDK's own, plus whatever else a preflight
# asks for (the openai JS SDK adds its x-stainless-* headers)
ALLOWED_HEADERS = ("authorization", "content-type", "x-openai-agents-sdk", "openai-beta", "api-key")
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSED_HEADERS = "Location"  # /v1/realtime/calls names the call there
PREFLIGHT_MAX_AGE_S = 600
MAX_REQUESTED_HEADERS = 32
GRANT_SCOPE_KEY = "streamvoice.grant"
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_UNMATCHED = "/*"  # a path inside a mount that no route of it serves (a 404 behind the mount's door)


class Door(enum.Enum):
    """What a route needs (see the module docstring)."""

    OPEN = "open"
    REALTIME = "realtime"
    DEMO = "demo"
    KEYED = "keyed"


def door_of(template: str | None) -> Door:
    """The door of a route's full path template (None: no route serves the path); closed unless listed."""
    if template in OPEN_ROUTES:
        return Door.OPEN
    if template in REALTIME_ROUTES:
        return Door.REALTIME
    if template in DEMO_ROUTES:
        return Door.DEMO
    return Door.KEYED


def route_template(routes: Sequence[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The full path template (``/v1/audio/voices/{name}``) of the route that serves ``scope``, or None.

    Matches as Starlette's router does: the first full match, else the first partial one (a wrong method).
    An app mounted whole (the demo's static files) is ``<mount path>/``; a path inside a mount of routes that
    none of them serves is ``<mount path>/*``.
    """
    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            here = prefix + route.path
            inner = route.routes
            if not inner:
                template: str = here + "/"
            else:
                template = route_template(inner, {**scope, **child}, here) or here + _UNMATCHED
        elif isinstance(route, Route | WebSocketRoute):
            template = prefix + route.path
        else:
            continue
        if match is Match.FULL:
            return template
        partial = partial or template
    return partial


def grant_of(scope: MutableMapping[str, Any]) -> Grant:
    """What the key of a request or WebSocket on a realtime route allows (the access layer verified it).

    Raises:
        LookupError: the request did not pass a realtime door of the access layer (a bug of the app).
    """
    grant = scope.get(GRANT_SCOPE_KEY)
    if not isinstance(grant, Grant):
        raise LookupError("no access grant: the route is not behind the access layer's realtime door")
    return grant


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: tuple[str, ...], *, keyed: bool = False
) -> bool:
    """Whether a browser page from ``origin`` may call this server (README "Security and limits").

    No ``Origin`` header (SDKs, servers, curl) is always allowed: the check only stops other sites' pages
    from driving this server through a visitor's browser. ``allowed`` lists exact origins, or ``*`` for
    any. With an empty list, a loopback page (``localhost``, ``127.0.0.1``, ``[::1]``) and a page served by
    this server under an IP address are allowed; a page served by this server under a DNS name is allowed
    only when a key guards the route (``keyed``), because without one a hostile site could rebind its DNS
    name to this server's address and drive it from a visitor's browser.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.lower() in {entry.lower() for entry in allowed}:
        return True
    if allowed:
        return False
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if _is_loopback(host):
        return True
    same_origin = host_header is not None and parts.netloc == host_header
    return same_origin and (keyed or _is_ip_literal(host))


class AccessLayer:
    """The ASGI middleware in front of the router (add it last, so it runs first).

    Args:
        app: the application it guards.
        router: the app's router; its routes are read at each request, so a route added later is guarded.
        keys: the server's key and the ephemeral keys.
        allowed_origins: ``--allowed-origins``.
        public_demo: ``--public-demo``: the demo door needs no key even on a keyed server.
        dialect: the server's forced dialect (``--dialect``), for a WebSocket refusal's event.
        metrics: refusals are counted by code.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        keys: Keys,
        allowed_origins: tuple[str, ...],
        public_demo: bool,
        dialect: Dialect | None,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self._router = router
        self._keys = keys
        self._allowed = allowed_origins
        self._public_demo = public_demo
        self._dialect = dialect
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _origin_ok(self, origin: str | None, headers: Headers, door: Door) -> bool:
        keyed = self._keys.keyed and door is not Door.DEMO  # the demo door lends keys: never trust a name
        return origin_allowed(origin, headers.get("host"), self._allowed, keyed=keyed)

    def _check_key(self, door: Door, presented: str | None) -> Grant:
        """The grant ``presented`` gets at ``door`` (not OPEN).

        Raises:
            KeyRefused: the key does not open the door.
        """
        if door is Door.REALTIME:
            return self._keys.verify_for_realtime(presented)
        if door is Door.DEMO and self._public_demo:
            return Grant()
        self._keys.check_server_key(presented)
        return Grant()

    # HTTP ----------------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers:
            await self._preflight(scope, headers, origin)(scope, receive, send)
            return
        template = route_template(self._router.routes, scope)
        door = door_of(template)
        if door is Door.OPEN:  # public reads: a foreign page is not refused, an allowed one gets CORS
            if origin is not None and self._origin_ok(origin, headers, door):
                send = _with_cors(send, origin)
            await self.app(scope, receive, send)
            return
        if not self._origin_ok(origin, headers, door):
            await self._refusal(403, CODE_ORIGIN_NOT_ALLOWED, _foreign(origin, "call"))(scope, receive, send)
            return
        if origin is not None:
            send = _with_cors(send, origin)
        try:
            scope[GRANT_SCOPE_KEY] = self._check_key(door, api_key_from_headers(headers))
        except KeyRefused as exc:
            message = refusal_message(exc.reason, websocket=False)
            await self._refusal(401, CODE_INVALID_API_KEY, message)(scope, receive, send)
            return
        if scope["method"] in WRITE_METHODS and _has_body(headers):
            refused = self._content_type_refusal(headers, template)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _content_type_refusal(self, headers: Headers, template: str | None) -> Response | None:
        declared = headers.get("content-type", "")
        media_type = declared.partition(";")[0].strip().lower()
        accepted = BODY_TYPES + ((SDP_TYPE,) if template == CALLS_PATH else ())
        if media_type in accepted:
            return None
        names = " or ".join(f"'{name}'" for name in accepted)
        message = (
            f"Unsupported content type: '{quote(declared)}'. This API method only accepts {names} requests, "
            f"but you specified the header 'Content-Type: {quote(declared)}'. Please try again with a "
            "supported content type."
        )
        return self._refusal(400, CODE_UNSUPPORTED_CONTENT_TYPE, message)

    def _preflight(self, scope: Scope, headers: Headers, origin: str) -> Response:
        """The answer to a CORS preflight, for any path: the route it asks about decides the origin rule."""
        method = headers["access-control-request-method"].strip().upper()
        template = route_template(self._router.routes, {**scope, "method": method})
        if not self._origin_ok(origin, headers, door_of(template)):
            return self._refusal(403, CODE_ORIGIN_NOT_ALLOWED, _foreign(origin, "call"))
        requested = [
            name.strip().lower() for name in headers.get("access-control-request-headers", "").split(",")
        ]
        extra = [name for name in requested[:MAX_REQUESTED_HEADERS] if _HEADER_NAME.match(name)]
        allowed = list(dict.fromkeys([*ALLOWED_HEADERS, *extra]))
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ", ".join(allowed),
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                "Vary": "Origin",
            },
        )

    def _refusal(self, status: int, code: str, message: str) -> Response:
        self._metrics.error(code)
        return JSONResponse(error_body(INVALID_REQUEST, code, message), status)

    # WebSocket -----------------------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = door_of(route_template(self._router.routes, scope))
        if door is Door.OPEN:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b""))
        handshake = negotiate(headers, scope.get("subprotocols") or [], forced=self._dialect, query=query)
        origin = headers.get("origin")
        if not self._origin_ok(origin, headers, door):
            report = ErrorReport(
                INVALID_REQUEST, CODE_ORIGIN_NOT_ALLOWED, _foreign(origin, "open sessions on")
            )
        else:
            try:
                scope[GRANT_SCOPE_KEY] = self._check_key(door, handshake.api_key)
            except KeyRefused as exc:
                message = refusal_message(exc.reason, websocket=True)
                report = ErrorReport(INVALID_REQUEST, CODE_INVALID_API_KEY, message)
            else:
                await self.app(scope, receive, send)
                return
        # accept first, then refuse: a browser cannot read the status of a refused upgrade (PROTOCOL.md §1.2)
        self._metrics.error(report.code)
        ws = WebSocket(scope, receive, send)
        await ws.accept(subprotocol=handshake.subprotocol)
        await WebSocketTransport(ws, handshake.dialect).refuse(report, CLOSE_POLICY_VIOLATION)


def _has_body(headers: Headers) -> bool:
    """Whether a request carries a body (a bodiless write, ``POST .../hangup``, has nothing to declare)."""
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")


def _foreign(origin: str | None, what: str) -> str:
    return (
        f"Pages from origin '{quote(origin)}' may not {what} this server; start it with --allowed-origins to "
        "allow them."
    )


def _with_cors(send: Send, origin: str) -> Send:
    """``send`` that adds the CORS headers of an allowed ``origin`` to the answer."""

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors
