"""The WebRTC call routes (docs/PROTOCOL.md §11): ``POST /v1/realtime/calls`` and what can be done to a call.

- ``POST /v1/realtime/calls``: the caller's SDP offer as the raw body (``Content-Type: application/sdp``, as
  OpenAI's WebRTC guide and ``@openai/agents-realtime`` send it) or as a ``multipart/form-data`` form with
  ``sdp`` and an optional ``session`` (the GA session object, as the openai SDKs' ``realtime.calls.create``
  sends it). Answer: ``201``, ``Content-Type: application/sdp``, the SDP answer with the server's
  candidates, and ``Location: /v1/realtime/calls/{call_id}`` (OpenAI's form; clients take the last path part
  as the call id, for the sideband WebSocket ``/v1/realtime?call_id=...`` and the hangup).
- ``POST /v1/realtime/calls/{call_id}/hangup``: ends the call (200, empty body).
- ``accept``, ``reject``, ``refer``: OpenAI's controls of incoming SIP calls. This server has no SIP, so for
  a WebRTC call they are refused (400 ``invalid_value`` on ``call_id``), and for an unknown id, as hangup,
  404 ``not_found``.

Who may call these routes is the access layer's decision (realtime/http/access.py): creating a call takes the
server's key or an ephemeral key (whose bound session the call starts from, before the form's ``session``);
hangup and the SIP controls take the server's key, as every other ``/v1`` route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from realtime.errors import (
    CODE_INVALID_JSON,
    CODE_INVALID_VALUE,
    CODE_MISSING_PARAMETER,
    CODE_WEBRTC_UNAVAILABLE,
    SERVER_ERROR,
    ProtocolViolation,
)
from realtime.http.access import grant_of
from realtime.http.body import check_declared_length, read_body, too_large
from realtime.http.errors import CODE_NOT_FOUND, HTTPError, error_response
from realtime.webrtc.calls import CallRefused, CallRegistry
from realtime.webrtc.offer import MAX_OFFER_BYTES, NoCandidates, OfferError
from realtime.wire.client_events import SessionUpdate, decode_session
from realtime.wire.handshake import Dialect
from realtime.wire.json_text import load_untrusted_json

SessionObject: TypeAlias = Mapping[str, object]  # a GA session object, as JSON decoded it
Handler = Callable[[Request], Awaitable[Response]]

SDP_MEDIA_TYPE = "application/sdp"
MAX_SESSION_BYTES = 256 * 1024  # the ``session`` form field (instructions and tools included)
CODE_INVALID_CONTENT_TYPE = "invalid_content_type"
HTTP_CREATED = 201
SIP_ONLY = ("accept", "reject", "refer")


def call_routes(calls: CallRegistry) -> list[BaseRoute]:
    """The call routes, to be mounted under ``/v1``."""

    async def create(request: Request) -> Response:
        try:
            grant = grant_of(request.scope)
            sdp, session = await _read_offer(request)
            update = _session_update(session)
            call_id, answer = await calls.start(sdp, [update] if update else [], base=grant.session)
        except CallRefused as exc:
            report = exc.report
            return error_response(
                HTTPError(exc.status, report.code or "", report.message, None, report.error_type)
            )
        except OfferError as exc:
            return error_response(HTTPError(400, CODE_INVALID_VALUE, str(exc), "sdp"))
        except NoCandidates as exc:  # the server's network, not the caller's offer
            return error_response(
                HTTPError(500, CODE_WEBRTC_UNAVAILABLE, f"WebRTC is unavailable: {exc}.", None, SERVER_ERROR)
            )
        except (HTTPError, ProtocolViolation) as exc:
            return error_response(exc)
        headers = {"Location": f"/v1/realtime/calls/{call_id}"}
        return Response(answer, HTTP_CREATED, headers=headers, media_type=SDP_MEDIA_TYPE)

    async def hangup(request: Request) -> Response:
        try:
            call_id = request.path_params["call_id"]
            if not calls.hang_up(call_id):
                raise _unknown(call_id)
        except HTTPError as exc:
            return error_response(exc)
        return Response(status_code=200)

    def sip_only(action: str) -> Handler:
        async def refuse(request: Request) -> Response:
            try:
                call_id = request.path_params["call_id"]
                if calls.find(call_id) is None:
                    raise _unknown(call_id)
                raise HTTPError(
                    400,
                    CODE_INVALID_VALUE,
                    f"Only incoming SIP calls can be {action}ed here; '{call_id}' is a WebRTC call (this server "
                    "has no SIP). End a WebRTC call with POST /v1/realtime/calls/{call_id}/hangup.",
                    "call_id",
                )
            except HTTPError as exc:
                return error_response(exc)

        return refuse

    routes: list[BaseRoute] = [
        Route("/realtime/calls", create, methods=["POST"]),
        Route("/realtime/calls/{call_id}/hangup", hangup, methods=["POST"]),
    ]
    routes += [
        Route(f"/realtime/calls/{{call_id}}/{action}", sip_only(action), methods=["POST"])
        for action in SIP_ONLY
    ]
    return routes


def _unknown(call_id: str) -> HTTPError:
    return HTTPError(
        404, CODE_NOT_FOUND, f"No call with id '{call_id[:100]}': it has ended, or never existed.", "call_id"
    )


async def _read_offer(request: Request) -> tuple[str, SessionObject | None]:
    """The offer and the optional session, from a raw ``application/sdp`` body or a multipart form.

    Raises:
        HTTPError: another content type, a missing ``sdp``, a ``session`` that is not a JSON object, or too
            large a body.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == SDP_MEDIA_TYPE:
        return _text(await read_body(request, MAX_OFFER_BYTES), "sdp"), None
    if content_type != "multipart/form-data":
        raise HTTPError(
            400,
            CODE_INVALID_CONTENT_TYPE,
            f"Send the SDP offer as the body with Content-Type: {SDP_MEDIA_TYPE}, or as the 'sdp' field of a "
            f"multipart/form-data form (with an optional 'session'); got '{content_type[:100]}'.",
        )
    check_declared_length(request, MAX_OFFER_BYTES + MAX_SESSION_BYTES)
    try:
        form = await request.form(max_files=2, max_fields=8, max_part_size=MAX_SESSION_BYTES)
    except Exception as exc:  # starlette's MultiPartException / HTTPException for a malformed body
        raise HTTPError(400, "invalid_form", f"The form could not be read: {exc}") from None
    sdp = await _field(form.get("sdp"), MAX_OFFER_BYTES, "sdp")
    if sdp is None:
        raise HTTPError(400, CODE_MISSING_PARAMETER, "Missing required parameter: 'sdp'.", "sdp")
    raw_session = await _field(form.get("session"), MAX_SESSION_BYTES, "session")
    if raw_session is None:
        return sdp, None
    try:
        session = load_untrusted_json(raw_session)
    except ValueError as exc:
        raise HTTPError(
            400, CODE_INVALID_JSON, f"The 'session' field is not JSON: {exc}", "session"
        ) from None
    if not isinstance(session, dict):
        raise HTTPError(400, CODE_INVALID_JSON, "The 'session' field must be a JSON object.", "session")
    return sdp, session


async def _field(value: str | UploadFile | None, limit: int, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    data = await value.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit, f"'{name}' field")
    return _text(data, name)


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, CODE_INVALID_VALUE, f"The '{name}' is not UTF-8 text.", name) from None


def _session_update(session: SessionObject | None) -> SessionUpdate | None:
    """A session object as the ``session.update`` that applies it (decoded as one: `decode_session`).

    Raises:
        ProtocolViolation: the session is not valid (its code and ``param`` under ``session.``).
    """
    if session is None:
        return None
    update = decode_session(dict(session), Dialect.GA)
    if not isinstance(update, SessionUpdate):  # a transcription session: a call is a realtime session
        raise ProtocolViolation(CODE_INVALID_VALUE, "The session object is not valid.", "session")
    return update
