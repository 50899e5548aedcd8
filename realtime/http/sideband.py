"""The sideband WebSocket of a WebRTC call: ``/v1/realtime?call_id=rtc_...`` (docs/PROTOCOL.md §11.4).

An application server attaches to a call a browser placed, to watch and steer it without the browser in the
loop: it receives every server event the call's data channel gets (from the moment it attaches; output audio
stays on the media track), and may send any client event (``session.update`` with instructions and tools,
``conversation.item.create`` with a function call's output, ``response.create``, ...), which the call's
session handles in order with the data channel's. A sideband leaving does not end the call; the call ending
closes its sidebands (with the session's close code). Each call takes at most `MAX_SIDEBANDS` of them.

The API key is checked as for any Realtime WebSocket (realtime/http/realtime_ws.py); an unknown call id is
refused before the upgrade with 404 and OpenAI's error body, as OpenAI refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from realtime.errors import CLOSE_TRY_AGAIN_LATER, INVALID_REQUEST, PeerGone
from realtime.http.ws_transport import WebSocketTransport
from realtime.session.transport import Ending
from realtime.webrtc.call_transport import MAX_SIDEBANDS, SidebandLink
from realtime.webrtc.calls import Call

HTTP_NOT_FOUND = 404
CODE_NOT_FOUND = "not_found"  # realtime/http/errors.py's code for a 404


async def refuse_unknown_call(ws: WebSocket, call_id: str) -> None:
    """Refuse the upgrade: 404 with OpenAI's error body (or, without the denial extension, close 1008)."""
    message = f"No call with id '{call_id[:100]}': it has ended, or never existed."
    # OpenAI's error shape, as realtime/http/errors.py `error_body` writes it (that module imports the WebSocket
    # endpoint, which imports this one: importing it back would close a cycle)
    body = {
        "error": {"message": message, "type": INVALID_REQUEST, "param": "call_id", "code": CODE_NOT_FOUND}
    }
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(body, HTTP_NOT_FOUND))
    else:
        await ws.close(1008, reason=CODE_NOT_FOUND)


async def serve_sideband(transport: WebSocketTransport, call: Call, send_timeout: float) -> None:
    """Attach the accepted socket behind ``transport`` to ``call`` until either side ends."""
    link = SidebandLink()
    if not call.transport.attach_sideband(link):
        await transport.close(
            Ending(CLOSE_TRY_AGAIN_LATER, f"a call takes at most {MAX_SIDEBANDS} sidebands")
        )
        return
    reader = asyncio.create_task(_read(transport, call), name=f"sideband in {call.id}")
    writer = asyncio.create_task(_write(transport, link, send_timeout), name=f"sideband out {call.id}")
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.transport.detach_sideband(link)
        for task in (reader, writer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, PeerGone):
                await task
    await transport.close(link.ending or Ending(1000))


async def _read(transport: WebSocketTransport, call: Call) -> None:
    """Client events from the sideband into the call's session, until the sideband leaves."""
    while True:
        message = await transport.receive_frame()
        if message is None:
            return
        await call.transport.from_sideband(message)


async def _write(transport: WebSocketTransport, link: SidebandLink, send_timeout: float) -> None:
    """The call's events to the sideband, each within ``send_timeout``, until the link ends."""
    while (text := await link.next()) is not None:
        try:
            async with asyncio.timeout(send_timeout):
                await transport.send_event(text)
        except TimeoutError:
            link.end(Ending(1008, "send_timeout"))
            return
