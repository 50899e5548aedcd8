"""The WebSocket upgrade: which dialect a connection speaks, which subprotocol to echo, the client's key, and
whether the session is a transcription session (``?intent=transcription``).

Pure functions of the request's headers, offered subprotocols and query; realtime/http/app.py calls `negotiate`
once per connection and the dialect is fixed from then on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from realtime.wire.session_config import SessionType

BETA_HEADER = "openai-beta"
BETA_HEADER_VALUE = "realtime=v1"
SUBPROTOCOL_REALTIME = "realtime"
SUBPROTOCOL_BETA = "openai-beta.realtime-v1"
SUBPROTOCOL_KEY_PREFIX = "openai-insecure-api-key."
BEARER_PREFIX = "bearer "
API_KEY_HEADER = "api-key"  # Azure-style clients
API_KEY_QUERY = "api_key"  # speaches-style ?api_key=
# ?intent=transcription opens a transcription session (docs/PROTOCOL.md §4.8)
INTENT_QUERY = "intent"
INTENT_TRANSCRIPTION = "transcription"


class Dialect(enum.Enum):
    """The event family a connection speaks, fixed at connect time."""

    GA = "ga"
    BETA = "beta"


@dataclass(frozen=True)
class Handshake:
    """What the WebSocket upgrade decided.

    Attributes:
        dialect: GA unless the client asked for beta.
        subprotocol: the subprotocol to select in the handshake response (never the key entry), or None.
        api_key: the key the client presented (Bearer, ``api-key`` header, subprotocol), or None.
        session_type: ``transcription`` with ``?intent=transcription``, else ``realtime``; fixed for the
            session's life.
    """

    dialect: Dialect
    subprotocol: str | None
    api_key: str | None
    session_type: SessionType = "realtime"


def forced(name: str) -> Dialect | None:
    """The dialect ``--dialect`` forces on every connection (``ga`` or ``beta``), or None for ``auto``."""
    return Dialect(name) if name in (Dialect.GA.value, Dialect.BETA.value) else None


def negotiate(
    headers: Mapping[str, str],
    subprotocols: Sequence[str],
    forced: Dialect | None = None,
    query: Mapping[str, str] | None = None,
) -> Handshake:
    """Pick the dialect, the subprotocol to echo, the client's key and the session type (docs/PROTOCOL.md §1.1,
    §1.2, §1.3, §2.1).

    The key is taken from the first of: ``Authorization: Bearer``, the ``api-key`` header, an
    ``openai-insecure-api-key.<key>`` subprotocol (never echoed), the ``api_key`` query parameter.

    Args:
        headers: request headers (case-insensitive mapping).
        subprotocols: the subprotocols the client offered, in order.
        forced: a server-wide dialect override, if configured.
        query: the upgrade request's query parameters.
    """
    beta = BETA_HEADER_VALUE in headers.get(BETA_HEADER, "").replace(" ", "")
    beta = beta or SUBPROTOCOL_BETA in subprotocols
    dialect = forced or (Dialect.BETA if beta else Dialect.GA)
    if SUBPROTOCOL_REALTIME in subprotocols:
        chosen: str | None = SUBPROTOCOL_REALTIME
    elif SUBPROTOCOL_BETA in subprotocols:
        chosen = SUBPROTOCOL_BETA
    else:
        chosen = None
    query = query or {}
    session_type: SessionType = (
        "transcription" if query.get(INTENT_QUERY) == INTENT_TRANSCRIPTION else "realtime"
    )
    return Handshake(dialect, chosen, _client_key(headers, subprotocols, query), session_type)


def _client_key(
    headers: Mapping[str, str], subprotocols: Sequence[str], query: Mapping[str, str]
) -> str | None:
    auth = headers.get("authorization", "")
    if auth[: len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
        return auth[len(BEARER_PREFIX) :].strip() or None
    if headers.get(API_KEY_HEADER):
        return headers[API_KEY_HEADER].strip()
    for offered in subprotocols:
        if offered.startswith(SUBPROTOCOL_KEY_PREFIX):
            return offered[len(SUBPROTOCOL_KEY_PREFIX) :] or None
    return query.get(API_KEY_QUERY) or None


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a plain HTTP request presents: ``Authorization: Bearer <key>`` or the ``api-key`` header."""
    return _client_key(headers, (), {})
