"""``POST /v1/realtime/client_secrets`` (OpenAI's shapes) and ``POST /demo/client_secrets`` (the demo page's).

Both mint an ephemeral key (realtime/http/keys.py) that opens Realtime sessions and nothing else:

- Request (openai ``ClientSecretCreateParams``): ``expires_after`` ``{"anchor": "created_at", "seconds": N}``
  (both optional; ``seconds`` 10 to ``--client-secret-max-seconds``, 600 when absent) and ``session``, a GA
  session object (``type: "realtime"``), validated exactly as a ``session.update`` is and bound to the key:
  every session the key opens starts with it (the client may still change it with ``session.update``).
- Response (openai ``ClientSecretCreateResponse``): ``{"value": "ek_...", "expires_at": <Unix seconds>,
  "session": <the effective session object, as session.created would show it>}``.

Who may call them is the access layer's business (realtime/http/access.py): ``/v1/realtime/client_secrets``
needs the server's key when it has one; ``/demo/client_secrets`` is the demo page's own door, open when the
server has no key or runs with ``--public-demo``, for pages of this server only. The demo's keys live at most
`DEMO_KEY_SECONDS` and carry no session (the page configures its session itself), so an open demo lends
nothing but short Realtime sessions.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime.errors import CODE_UNKNOWN_PARAMETER, ProtocolViolation
from realtime.http.body import drop_nulls, parse_request, read_json
from realtime.http.errors import error_response
from realtime.http.keys import Keys
from realtime.session.presets import updated_config
from realtime.speech.runtime import Runtime
from realtime.wire.client_events import decode_session
from realtime.wire.handshake import Dialect
from realtime.wire.records import new_id
from realtime.wire.session_config import SessionConfig, SessionType
from realtime.wire.session_echo import ga_session
from realtime.wire.transcription_session import TranscriptionSessionUpdate
from realtime.wire.validation import check_range

MIN_KEY_SECONDS = 10  # OpenAI's bounds: 10 s to 2 h, 600 s by default
DEFAULT_KEY_SECONDS = 600
DEMO_KEY_SECONDS = 60  # long enough to connect; a session started in time outlives its key
MAX_BODY_BYTES = 256 * 1024  # a session object with long instructions and many tools


class ExpiresAfter(BaseModel):
    """``expires_after``: the key's lifetime from its creation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    anchor: Literal["created_at"] = "created_at"
    seconds: int = DEFAULT_KEY_SECONDS


class ClientSecretRequest(BaseModel):
    """The body of ``POST /v1/realtime/client_secrets`` (``session`` is decoded like a ``session.update``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    expires_after: ExpiresAfter | None = None
    session: dict[str, object] | None = None


class ClientSecretsAPI:
    """The two minting routes over one runtime and one key store.

    Args:
        runtime: the server's runtime (its voices validate a bound session's voice).
        keys: where minted keys are kept.
        model: the model id sessions report.
    """

    def __init__(self, runtime: Runtime, keys: Keys, model: str) -> None:
        self._runtime = runtime
        self._keys = keys
        self._model = model

    async def create(self, request: Request) -> Response:
        """``POST /v1/realtime/client_secrets``."""
        return await self._mint(request, self._runtime.config.client_secret_max_seconds, DEFAULT_KEY_SECONDS)

    async def demo(self, request: Request) -> Response:
        """``POST /demo/client_secrets``: a key for the demo page, at most `DEMO_KEY_SECONDS`, no session."""
        return await self._mint(request, DEMO_KEY_SECONDS, DEMO_KEY_SECONDS, demo=True)

    async def _mint(
        self, request: Request, max_seconds: int, default_seconds: int, *, demo: bool = False
    ) -> Response:
        try:
            raw = drop_nulls(await read_json(request, MAX_BODY_BYTES))
            if demo and "session" in raw:  # the demo's keys never carry a configuration
                raise ProtocolViolation(
                    CODE_UNKNOWN_PARAMETER,
                    "The demo's keys carry no session; send session.update.",
                    "session",
                )
            body = parse_request(ClientSecretRequest, raw)
            seconds = default_seconds
            if body.expires_after is not None and "seconds" in body.expires_after.model_fields_set:
                seconds = body.expires_after.seconds
                check_range("expires_after.seconds", seconds, MIN_KEY_SECONDS, max_seconds)
            config = self._session(body.session)
        except Exception as exc:
            return error_response(exc)
        bound, size = None, 0
        if body.session is not None:
            bound, size = config, len(json.dumps(body.session))
        value, expires_at = self._keys.mint(seconds, bound, size, demo=demo)
        return JSONResponse(
            {"value": value, "expires_at": expires_at, "session": ga_session(config, new_id("sess"))},
            headers={"Cache-Control": "no-store"},  # a credential: no cache may keep it
        )

    def _session(self, raw: dict[str, object] | None) -> SessionConfig:
        """The configuration a key opens sessions with: the defaults, with ``raw`` applied when given.

        Raises:
            ProtocolViolation: ``raw`` is not a session ``session.update`` would accept (400 through
                `error_response`, naming ``session.<field>``).
        """
        voices = self._runtime.voices
        if raw is None:
            return SessionConfig(model=self._model, voice=voices.default)
        update = decode_session(dict(raw), Dialect.GA)
        kind: SessionType = "transcription" if isinstance(update, TranscriptionSessionUpdate) else "realtime"
        config = SessionConfig(model=self._model, voice=voices.default, type=kind)
        return updated_config(config, update, voices=voices.accepted_names())
