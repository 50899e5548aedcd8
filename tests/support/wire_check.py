"""Client-side checks of server frames: every frame validates against the openai SDK's server-event models.

`validate_frame` parses one frame with the SDK union of the connection's dialect (strict pydantic
validation, as the Agents SDK does) and with the specific model of its ``type``, checks the frame size limit
and that no event of the other dialect's family slipped through. `RawClient` is a raw `websockets` client that
validates everything it receives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import websockets
from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GaServerEvent
from pydantic import TypeAdapter

from realtime.wire.server_events import BETA_EVENT_CLASSES, GA_EVENT_CLASSES

GA_ADAPTER: TypeAdapter[Any] = TypeAdapter(GaServerEvent)
BETA_ADAPTER: TypeAdapter[Any] = TypeAdapter(BetaServerEvent)
MAX_FRAME = 1024 * 1024
RECV_GUARD_S = 30.0  # only a hang guard, never a latency assertion
GA_ONLY = frozenset(GA_EVENT_CLASSES) - frozenset(BETA_EVENT_CLASSES)
BETA_ONLY = frozenset(BETA_EVENT_CLASSES) - frozenset(GA_EVENT_CLASSES)


def validate_frame(text: str | bytes, dialect: str) -> dict[str, Any]:
    """Validate one server frame for ``dialect`` (``ga`` or ``beta``) and return it as a dict."""
    assert isinstance(text, str), "server frames must be text"
    assert len(text.encode()) < MAX_FRAME, "server frame over 1 MiB"
    data: dict[str, Any] = json.loads(text)
    kind = data["type"]
    if dialect == "ga":
        assert kind in GA_EVENT_CLASSES and kind not in BETA_ONLY, f"not a GA event: {kind}"
        GA_EVENT_CLASSES[kind].model_validate(data, strict=False)
        GA_ADAPTER.validate_python(data)
    else:
        assert kind in BETA_EVENT_CLASSES and kind not in GA_ONLY, f"not a beta event: {kind}"
        BETA_EVENT_CLASSES[kind].model_validate(data)
        if kind == "transcription_session.updated":
            # the SDK's model requires the client_secret a WebSocket update leaves out (its own docstring):
            # every other field must still pass it
            session = {**data["session"], "client_secret": {"value": "", "expires_at": 0}}
            BETA_ADAPTER.validate_python({**data, "session": session})
        elif kind != "transcription_session.created":  # an event the SDK's beta union lacks
            BETA_ADAPTER.validate_python(data)
    assert data["event_id"].startswith("event_")
    return data


class RawClient:
    """A raw websockets client that validates every received frame."""

    def __init__(self, ws: Any, dialect: str) -> None:
        self.ws = ws
        self.dialect = dialect
        self.received: list[dict[str, Any]] = []
        self.created: dict[str, Any] = {}  # the session's first event

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        beta: bool = False,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
        query: str = "model=step-audio-2-mini",
    ) -> RawClient:
        """Connect, read ``session.created`` (and beta's ``conversation.created``); with ``intent=transcription``
        in ``query``, a transcription session's first event (beta ``transcription_session.created``, alone)."""
        extra = dict(headers or {})
        if beta:
            extra["OpenAI-Beta"] = "realtime=v1"
        ws = await websockets.connect(
            f"{url}?{query}",
            additional_headers=extra,
            subprotocols=[websockets.Subprotocol(p) for p in subprotocols] if subprotocols else None,
        )
        client = cls(
            ws, "beta" if beta or (subprotocols and "openai-beta.realtime-v1" in subprotocols) else "ga"
        )
        transcription = "intent=transcription" in query.split("&")
        first = await client.recv()
        beta_transcription = client.dialect == "beta" and transcription
        assert first["type"] == ("transcription_session.created" if beta_transcription else "session.created")
        assert (first["session"].get("type") == "transcription") is (transcription and client.dialect == "ga")
        if client.dialect == "beta" and not transcription:
            assert (await client.recv())["type"] == "conversation.created"
        client.created = first
        return client

    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event."""
        await self.ws.send(json.dumps(event))

    async def send_raw(self, frame: str | bytes) -> None:
        """Send an arbitrary frame."""
        await self.ws.send(frame)

    async def recv(self) -> dict[str, Any]:
        """Receive and validate one event."""
        async with asyncio.timeout(RECV_GUARD_S):
            frame = await self.ws.recv()
        event = validate_frame(frame, self.dialect)
        self.received.append(event)
        return event

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Receive events up to and including the first of type ``kind``."""
        events = []
        while True:
            event = await self.recv()
            events.append(event)
            if event["type"] == kind:
                return events

    async def error(self, code: str | None, *, event_id: str | None = None) -> dict[str, Any]:
        """The next event must be an ``error`` with ``code`` (None: OpenAI's null); returns its ``error``."""
        event = await self.recv()
        assert event["type"] == "error", event
        error: dict[str, Any] = event["error"]
        assert error["code"] == code, error
        assert "Traceback" not in error["message"]
        if event_id is not None:
            assert error["event_id"] == event_id
        return error

    async def alive(self) -> None:
        """Prove the session still works: an update round-trips (in a transcription session, its own kind)."""
        if self.created.get("type") == "transcription_session.created":
            await self.send({"type": "transcription_session.update", "session": {"include": []}})
            assert (await self.recv())["type"] == "transcription_session.updated"
            return
        if self.created.get("session", {}).get("type") == "transcription":
            await self.send({"type": "session.update", "session": {"type": "transcription", "include": []}})
            assert (await self.recv())["type"] == "session.updated"
            return
        session: dict[str, Any] = {"instructions": "still here"}
        if self.dialect == "ga":
            session["type"] = "realtime"
        await self.send({"type": "session.update", "session": session})
        event = await self.recv()
        assert event["type"] == "session.updated", event
        assert event["session"]["instructions"] == "still here"

    async def close(self) -> None:
        """Close the socket."""
        await self.ws.close()
