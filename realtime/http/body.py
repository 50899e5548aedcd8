"""Reading request bodies under a size limit, and validating them into typed requests with OpenAI errors.

A body over its limit is refused with 413 before it is parsed (``Content-Length`` first, then while reading,
for chunked uploads), so no route holds more than its limit in memory.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from realtime.errors import (
    CODE_INVALID_JSON,
    CODE_INVALID_VALUE,
    CODE_UNKNOWN_PARAMETER,
    ProtocolViolation,
)
from realtime.http.errors import CODE_TOO_LARGE, HTTPError
from realtime.wire.json_text import load_untrusted_json, refuse_unpaired_surrogates
from realtime.wire.validation import violation_from

# pydantic error types that mean "right type, wrong value" (the shared validator covers the others)
_VALUE_ERRORS = frozenset(
    {"too_short", "too_long", "string_too_short", "string_too_long", "greater_than", "less_than"}
)
_M = TypeVar("_M", bound=BaseModel)


def too_large(limit: int, what: str = "request body") -> HTTPError:
    """413 for a body or upload over ``limit`` bytes."""
    return HTTPError(413, CODE_TOO_LARGE, f"The {what} is larger than the limit of {limit} bytes.")


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse early when ``Content-Length`` already says the body is too large.

    Raises:
        HTTPError: 413, or 400 for a malformed ``Content-Length``.
    """
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise HTTPError(400, "invalid_header", "The Content-Length header is not a number.")
    if int(declared) > limit:
        raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes.

    Raises:
        HTTPError: 413 when the body is larger than ``limit``; 400 when the client went away mid-body.
    """
    check_declared_length(request, limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large(limit)
    except ClientDisconnect:
        raise HTTPError(400, "client_disconnected", "The client closed the connection mid-request.") from None
    return bytes(body)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object.

    Raises:
        HTTPError: 413 over the limit; 400 ``invalid_json`` when it is not a JSON object.
        ProtocolViolation: ``nesting_too_deep``, or ``invalid_value`` for text with an unpaired surrogate
            (a 400 through `as_http_error`).
    """
    body = await read_body(request, limit)
    try:
        text = body.decode("utf-8")
        data = load_untrusted_json(text, reject_constants=True)
    except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError among them
        raise HTTPError(
            400,
            CODE_INVALID_JSON,
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object.",
        ) from None
    if not isinstance(data, dict):
        raise HTTPError(400, CODE_INVALID_JSON, "The JSON body of your request must be an object.")
    refuse_unpaired_surrogates(text, data)
    return data


def drop_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """Top-level ``null`` values count as absent (as OpenAI's API treats them)."""
    return {key: value for key, value in data.items() if value is not None}


def parse_request(model: type[_M], data: dict[str, Any]) -> _M:
    """Validate ``data`` into ``model``; the first problem becomes a `ProtocolViolation` naming the field.

    Fields a model forbids come back as ``unknown_parameter`` (OpenAI: "Unrecognized request argument").

    Raises:
        ProtocolViolation: ``missing_required_parameter``, ``invalid_type``, ``invalid_value`` or
            ``unknown_parameter``, with ``param`` the dotted path.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in _VALUE_ERRORS:
            param = _param(first["loc"])
            raise ProtocolViolation(
                CODE_INVALID_VALUE, f"Invalid value for '{param}': {first['msg']}.", param
            ) from None
        if first["type"] == "extra_forbidden":
            name = ".".join(str(part) for part in first["loc"])
            raise ProtocolViolation(
                CODE_UNKNOWN_PARAMETER, f"Unrecognized request argument supplied: {name}", name
            ) from None
        raise violation_from(exc, "", data) from None


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
