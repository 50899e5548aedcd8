"""Every WebRTC call of the server, from its offer to its last packet: `CallRegistry`.

A call is answered at once (``POST /v1/realtime/calls`` returns the SDP answer) and then lives on its own
task (`CallRegistry._run`):

1. pending: ICE, DTLS and SCTP come up; the call waits, at most ``--call-connect-timeout``, for the peer's
   ``oai-events`` data channel to open (or, for an offer without a data channel, for the peer connection to
   connect). A call that never gets there is dropped: its slot and sockets are freed.
2. active: `serve_connection` runs the call's `Session` over its `CallTransport`, with the peer's track
   audio pumped into it (realtime/webrtc/peer_audio.py), exactly as a WebSocket session runs. It ends when
   the peer leaves (the data channel or the peer connection closes, or ICE consent checks fail, about 30 s
   after a peer vanishes), on a hangup, at the session duration limit, or when the server drains.
3. ended: the peer connection is closed (its UDP sockets with it) and the call forgotten.

Every call, pending or active, holds one of the server's ``--max-sessions`` slots from its offer on; at most
``--max-pending-calls`` are pending at once. Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from realtime.config_groups import WebRTCOptions
from realtime.errors import (
    CLOSE_NORMAL,
    CODE_PENDING_CALLS,
    CODE_SESSION_LIMIT,
    CODE_SHUTTING_DOWN,
    SERVER_ERROR,
    ErrorReport,
)
from realtime.session.connection import Drain, serve_connection
from realtime.session.session import Session
from realtime.session.transport import Ending
from realtime.speech.runtime import Runtime
from realtime.webrtc.call_transport import CallTransport
from realtime.webrtc.offer import IceSettings, OfferShape, check_offer, negotiate
from realtime.webrtc.peer_audio import pump_peer_audio
from realtime.webrtc.playout import PlayoutTrack
from realtime.wire.client_events import SessionUpdate
from realtime.wire.handshake import Dialect
from realtime.wire.records import new_id
from realtime.wire.session_config import SessionConfig

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "oai-events"  # the data channel a caller creates for the Realtime events
CLOSE_WAIT_S = 5.0  # longest wait for aiortc to close a peer connection
HTTP_UNAVAILABLE = 503


class SessionSlots(Protocol):
    """The server's session cap and drain signal (realtime/http/realtime_ws.py `SessionCount`)."""

    limit: int
    open: int
    drain: Drain

    def opened(self) -> None:
        """Count a new session."""
        ...

    def closed(self) -> None:
        """Count a session gone."""
        ...


class CallRefused(Exception):
    """No call for this offer now (full, draining); ``status`` is the HTTP status to answer with.

    Attributes:
        status: HTTP status.
        report: the error's type, code and message.
    """

    def __init__(self, status: int, report: ErrorReport) -> None:
        super().__init__(report.message)
        self.status = status
        self.report = report


@dataclass
class Call:
    """One call (event loop only).

    Attributes:
        id: ``rtc_...``, the last part of the ``Location`` the offer was answered with.
        pc: its peer connection.
        transport: its `Transport`.
        session: its session (configured, not yet open while pending).
        shape: what the offer asked for.
        connected: set once the call is connected (or once it ended before that).
        remote_audio: the caller's audio track, once the peer connection has it.
    """

    id: str
    pc: RTCPeerConnection
    transport: CallTransport
    session: Session
    shape: OfferShape
    connected: asyncio.Event
    remote_audio: MediaStreamTrack | None = None

    @property
    def pending(self) -> bool:
        """Answered, not yet connected, not ended."""
        return not self.connected.is_set()


class CallRegistry:
    """The calls of one app: start, find, hang up, and close them all at shutdown.

    Args:
        runtime: the server's runtime (sessions run on it).
        slots: the session cap the calls count against, and the drain they follow.
        options: ICE and the pending-call limits (``ServerConfig.webrtc``).
        model: the model name sessions report.
    """

    def __init__(self, runtime: Runtime, slots: SessionSlots, options: WebRTCOptions, model: str) -> None:
        self._runtime = runtime
        self._slots = slots
        self._options = options
        self._ice = IceSettings(options.webrtc_ice_servers, options.webrtc_public_ip)
        self._model = model
        self._calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0  # offers being answered (gathering), counted as pending

    @property
    def pending(self) -> int:
        """Calls answered (or being answered) and not yet connected."""
        return self._starting + sum(1 for call in self._calls.values() if call.pending)

    @property
    def active(self) -> int:
        """Connected calls."""
        return sum(1 for call in self._calls.values() if not call.pending)

    def find(self, call_id: str) -> Call | None:
        """The live call with this id, if any."""
        return self._calls.get(call_id)

    async def start(
        self, offer: str, presets: Sequence[SessionUpdate] = (), base: SessionConfig | None = None
    ) -> tuple[str, str]:
        """Answer ``offer`` with a new call starting from ``base`` (an ephemeral key's session, or the server's
        defaults when None), then configured by ``presets`` (applied in order).

        Returns:
            the call id and the SDP answer.

        Raises:
            CallRefused: the server drains, is full, or has ``--max-pending-calls`` pending.
            OfferError: the offer cannot become a call (a 400).
            ProtocolViolation: a preset is not a valid session (a 400).
            NoCandidates: the server could not gather a candidate.
        """
        self._admit()
        shape = check_offer(offer)
        session = Session(self._runtime, Dialect.GA, self._model, preset=base)
        for update in presets:
            session.preset(update)
        self._starting += 1
        self._slots.opened()  # held from here: an answered call is a session until it ends
        self._runtime.metrics.session_opened()
        playout = PlayoutTrack()
        call = Call(
            new_id("rtc"),
            RTCPeerConnection(self._ice.configuration()),
            CallTransport(playout),
            session,
            shape,
            asyncio.Event(),
        )
        try:
            self._wire(call)
            answer = await negotiate(call.pc, offer, playout, self._ice)
        except BaseException:
            self._starting -= 1
            await self._finish(call)
            raise
        self._starting -= 1
        self._calls[call.id] = call
        task = asyncio.create_task(self._run(call), name=f"call {call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("call %s answered (data channel: %s)", call.id, shape.has_channel)
        return call.id, answer

    def _admit(self) -> None:
        slots = self._slots
        if slots.drain.started.is_set():
            raise CallRefused(
                HTTP_UNAVAILABLE,
                ErrorReport(SERVER_ERROR, CODE_SHUTTING_DOWN, "The server is shutting down."),
            )
        if slots.open >= slots.limit:
            message = f"The server is at its limit of {slots.limit} sessions; retry later."
            raise CallRefused(HTTP_UNAVAILABLE, ErrorReport(SERVER_ERROR, CODE_SESSION_LIMIT, message))
        limit = self._options.max_pending_calls
        if self.pending >= limit:
            message = (
                f"The server has {limit} calls still connecting (its limit); retry once they have connected "
                "or timed out."
            )
            raise CallRefused(HTTP_UNAVAILABLE, ErrorReport(SERVER_ERROR, CODE_PENDING_CALLS, message))

    def _wire(self, call: Call) -> None:
        """Follow the peer connection: its channel, its track, its state."""
        pc, transport = call.pc, call.transport

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != EVENTS_CHANNEL or transport.left.is_set() or not call.pending:
                return  # only the first oai-events channel carries the events
            transport.attach_channel(channel)
            call.connected.set()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and call.remote_audio is None:
                call.remote_audio = track

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and not call.shape.has_channel:
                call.connected.set()
            elif state in ("failed", "closed"):
                transport.end(f"the peer connection {state}")
                call.connected.set()

    async def _run(self, call: Call) -> None:
        try:
            try:
                async with asyncio.timeout(self._options.call_connect_timeout):
                    await call.connected.wait()
            except TimeoutError:
                log.info("call %s did not connect within %g s", call.id, self._options.call_connect_timeout)
                return
            if call.transport.left.is_set():
                log.info("call %s ended before it connected: %s", call.id, call.transport.reason)
                return
            await self._serve(call)
        finally:
            self._calls.pop(call.id, None)
            await self._finish(call)

    async def _serve(self, call: Call) -> None:
        pump = None
        if call.remote_audio is not None:
            pump = asyncio.create_task(
                pump_peer_audio(call.remote_audio, call.transport.deliver_audio), name=f"audio {call.id}"
            )
        try:
            ending = await serve_connection(call.session, call.transport, self._slots.drain)
            log.info("call %s ended (%s; %s)", call.id, ending.code, call.transport.reason or "server")
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _finish(self, call: Call) -> None:
        """Close the peer connection (bounded) and give the slot back."""
        await call.transport.close(Ending(CLOSE_NORMAL))  # again after a session: ends a pending call's track
        call.connected.set()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await call.pc.close()
        except TimeoutError:
            log.warning("call %s: the peer connection did not close within %g s", call.id, CLOSE_WAIT_S)
        except Exception:
            log.exception("call %s: closing the peer connection failed", call.id)
        finally:
            self._slots.closed()
            self._runtime.metrics.session_closed()

    def hang_up(self, call_id: str) -> bool:
        """End a call (``POST /v1/realtime/calls/{call_id}/hangup``); False when there is no such call."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        call.transport.end("hung up")
        call.connected.set()
        return True

    async def close(self) -> None:
        """End every call and wait for each to be closed (the app's shutdown)."""
        for call in list(self._calls.values()):
            call.transport.end("the server is stopping")
            call.connected.set()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
