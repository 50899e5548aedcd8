"""OpenAI's HTTP error shape for the REST routes, and the Starlette handlers that map to it.

Every failure of a ``/v1/...`` HTTP route reaches the client as ``{"error": {"message", "type", "param",
"code"}}`` with the matching status, the shape the openai SDK parses into ``openai.APIStatusError`` subclasses:

=====  =============================================  =========================================================
400    `ProtocolViolation` (client mistake)            ``invalid_request_error``, the violation's code and param
400    a write whose body is not JSON or multipart     ``invalid_request_error``, ``unsupported_content_type``
401    missing or wrong key (realtime/http/access.py)  ``invalid_request_error``, ``invalid_api_key``
403    a page from a foreign origin (the same layer)   ``invalid_request_error``, ``origin_not_allowed``
404    unknown route or resource                       ``invalid_request_error``, ``not_found`` / the code given
405    wrong method                                    ``invalid_request_error``, ``method_not_allowed``
413    body or upload over its limit                   ``invalid_request_error``, ``request_too_large``
500    `ResponseFailure` before any byte was sent      ``server_error``, the failure's code
500    anything else (a bug: logged, never detailed)   ``server_error``, ``internal_error``
=====  =============================================  =========================================================
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime.errors import (
    CODE_INTERNAL,
    INTERNAL_MESSAGE,
    INVALID_REQUEST,
    MAX_QUOTED_CHARS,
    SERVER_ERROR,
    ProtocolViolation,
    RealtimeError,
    ResponseFailure,
    bounded_message,
    quote,
)

log = logging.getLogger(__name__)

CODE_NOT_FOUND = "not_found"
CODE_METHOD_NOT_ALLOWED = "method_not_allowed"
CODE_TOO_LARGE = "request_too_large"
CODE_UNSUPPORTED_CONTENT_TYPE = (
    "unsupported_content_type"  # OpenAI's, as clients switching body types read it
)
_STATUS_CODES = {404: CODE_NOT_FOUND, 405: CODE_METHOD_NOT_ALLOWED, 413: CODE_TOO_LARGE}


class HTTPError(Exception):
    """A REST failure with its HTTP status, in OpenAI's error shape.

    Attributes:
        status: HTTP status code.
        code: ``error.code``.
        message: ``error.message`` (safe to show).
        param: ``error.param``.
        error_type: ``error.type``.
        retry_after: seconds for a ``Retry-After`` header (0: none); the openai SDKs wait that long.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        error_type: str = INVALID_REQUEST,
        retry_after: int = 0,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


def error_body(error_type: str, code: str | None, message: str, param: str | None = None) -> dict[str, Any]:
    """The JSON body of an OpenAI error (also the ``error`` payload of an SSE ``error`` event): the message
    bounded (`realtime.errors.bounded_message`), a long ``param`` quoted."""
    shown = param if param is None or len(param) <= MAX_QUOTED_CHARS else quote(param)
    return {
        "error": {
            "message": bounded_message(message, param),
            "type": error_type,
            "param": shown,
            "code": code,
        }
    }


def as_http_error(exc: BaseException) -> HTTPError:
    """Map our exception taxonomy to an `HTTPError` (unknown exceptions are logged as bugs)."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, ProtocolViolation):
        return HTTPError(400, exc.code, exc.message, exc.param)
    if isinstance(exc, ResponseFailure):  # a client-side failure (context too long) is the client's 400
        if exc.error_type == INVALID_REQUEST:
            return HTTPError(400, exc.code, exc.message, exc.param)
        return HTTPError(500, exc.code, exc.message, exc.param, SERVER_ERROR)
    if isinstance(exc, RealtimeError):
        return HTTPError(400, exc.code, exc.message, exc.param, exc.error_type)
    log.error("internal error while serving an HTTP request", exc_info=exc)
    return HTTPError(500, CODE_INTERNAL, INTERNAL_MESSAGE, None, SERVER_ERROR)


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON response for any exception."""
    error = as_http_error(exc)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse(
        error_body(error.error_type, error.code, error.message, error.param), error.status, headers=headers
    )


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette handler for `HTTPError` and our own error taxonomy."""
    return error_response(exc)


async def handle_starlette_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405/... in OpenAI's shape (the SDK shows ``error.message``)."""
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = (
        exc.detail if exc.status_code != 404 else f"Unknown route: {request.method} {quote(request.url.path)}"
    )
    response = JSONResponse(error_body(INVALID_REQUEST, code, message), exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Last resort for a bug in a handler: logged, answered as a generic 500 without details."""
    return error_response(exc)
