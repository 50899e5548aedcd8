"""The WebSocket implementation of the session core's `Transport` (realtime/session/transport.py).

Text frames in, each decoded onto a typed client event in the connection's dialect (a binary frame or a frame
that does not decode becomes an `Undecodable` for the session to report); server events and output audio out
as text frames, the audio as its ``response.output_audio.delta`` event. A WebSocket client plays what it is
sent whenever it likes, so this transport has no `Playback`: the session counts what was written.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from realtime.errors import CODE_INVALID_EVENT, ErrorReport, PeerGone, ProtocolViolation
from realtime.session.transport import Ending, Inbound, OutputAudio, Playback, Undecodable
from realtime.wire.client_events import decode_client_frame
from realtime.wire.handshake import Dialect
from realtime.wire.server_events import EventBuilder, encode

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0  # longest wait to hand the close frame to a socket that is not being read
_NO_CLOSE_FRAME = (1005, 1006)  # codes that mean "no close frame": there is nobody to send one to
_SEND_FAILURES = (WebSocketDisconnect, RuntimeError, OSError)


class WebSocketTransport:
    """One accepted Starlette WebSocket as a `Transport` (event loop only).

    Args:
        ws: the socket, already accepted.
        dialect: the negotiated dialect (how client frames are decoded).
    """

    def __init__(self, ws: WebSocket, dialect: Dialect) -> None:
        self._ws = ws
        self._dialect = dialect

    @property
    def playback(self) -> Playback | None:
        """None: a WebSocket peer plays the audio itself, out of the server's sight."""
        return None

    async def receive_frame(self) -> str | bytes | None:
        """The next frame as sent (text, or bytes for a binary frame); None once the client disconnected."""
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def receive(self) -> Inbound | None:
        """The next client event (or why the frame is not one); None once the client disconnected."""
        text = await self.receive_frame()
        if text is None:
            return None
        if not isinstance(text, str):
            return Undecodable(
                ProtocolViolation(
                    # OpenAI's code and words (docs/PROTOCOL.md §8.3)
                    CODE_INVALID_EVENT,
                    "Expected a text WebSocket message; binary frames are not supported.",
                )
            )
        try:
            return decode_client_frame(text, self._dialect)
        except Exception as exc:  # the session reports it: a client mistake precisely, a bug generically
            return Undecodable(exc)

    async def send_event(self, text: str) -> None:
        """Write one text frame.

        Raises:
            PeerGone: the socket is closed or broken.
        """
        try:
            await self._ws.send_text(text)
        except _SEND_FAILURES as exc:
            raise PeerGone(str(exc)) from exc

    async def send_audio(self, audio: OutputAudio) -> None:
        """Write the audio as its ``response.output_audio.delta`` event."""
        await self.send_event(audio.delta_text)

    async def refuse(self, report: ErrorReport, close_code: int) -> None:
        """Tell a client why it gets no session, then close with ``close_code`` (reason: the code).

        The socket is accepted first: a browser cannot read the status of a refused upgrade, but it can read
        an event and a close reason (docs/PROTOCOL.md §1.2). Waits at most `CLOSE_WAIT_S` for each.
        """
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.send_event(encode(EventBuilder(self._dialect).error(report)))
        except (TimeoutError, PeerGone):
            return
        await self.close(Ending(close_code, report.code or ""))

    async def close(self, ending: Ending) -> None:
        """Send the close frame if the socket can still take it; never waits more than `CLOSE_WAIT_S`.

        A peer that does not read keeps the transport's buffer full: the close frame then cannot be written,
        and the server lets go of the connection anyway (uvicorn closes the transport when the handler returns).
        """
        ws = self._ws
        if (
            ws.client_state is not WebSocketState.CONNECTED
            or ws.application_state is not WebSocketState.CONNECTED
        ):
            return
        if ending.code in _NO_CLOSE_FRAME:
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await ws.close(ending.code, reason=ending.reason or None)
        except (TimeoutError, *_SEND_FAILURES):
            pass  # the client left while we were closing, or does not read
