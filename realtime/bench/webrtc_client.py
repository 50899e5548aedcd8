"""A WebRTC caller for `realtime bench e2e --transport webrtc` and the tests: an aiortc peer placing a call the
way a browser does (OpenAI's WebRTC guide, ``@openai/agents-realtime``).

`CallClient.connect` creates the peer connection with a microphone track and the ``oai-events`` data channel,
sends the offer to ``POST /v1/realtime/calls`` without ICE candidates (a browser trickles them: the server must
learn the caller's addresses from its connectivity checks), applies the answer and waits for the channel to
open. Then: `send` a client event, `speak` PCM into the microphone (played out in real time by the server's own
`PlayoutTrack`, so the caller sends exactly what a paced source would), `until` a server event (`EventLog`); everything the
server plays is decoded and kept (`heard`, 48 kHz mono PCM16) with each frame's arrival time (`frames`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.audio import AudioFormat
from realtime.bench.event_log import WAIT_GUARD_S, EventLog
from realtime.session.transport import OutputAudio
from realtime.webrtc.peer_audio import frame_to_mono
from realtime.webrtc.playout import PlayoutTrack
from realtime.wire.handshake import Dialect
from realtime.wire.server_events import EventBuilder, PartIds

SILENT_PEAK = 64  # a decoded frame whose samples all stay below this (of 32767) counts as silence
_INT16_SCALE = 32767.0


@dataclass
class HeardFrame:
    """One 20 ms frame the caller decoded from the server's track.

    Attributes:
        at: `time.perf_counter` when it was decoded.
        peak: its largest absolute sample (int16 scale).
    """

    at: float
    peak: int


class CallClient(EventLog):
    """One call from the caller's side (event loop only). Build it with `connect`.

    Server events from the data channel are kept in `received` (as ``parse`` returned them) and read with
    `recv` / `until` (`EventLog`).

    Attributes:
        call_id: the id from the answer's ``Location``.
        location: the answer's ``Location``.
        heard: the server's audio as decoded here, 48 kHz mono PCM16.
        frames: each decoded frame's arrival and level.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        channel: RTCDataChannel,
        mic: PlayoutTrack,
        parse: Callable[[str], dict[str, Any]],
    ) -> None:
        super().__init__()
        self.pc, self.channel, self.mic, self.parse = pc, channel, mic, parse
        self.call_id = ""
        self.location = ""
        self.heard = bytearray()
        self.frames: list[HeardFrame] = []
        self._frame = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._spoken = 0

    @classmethod
    async def connect(
        cls,
        base_url: str,
        *,
        api_key: str | None = None,
        session: dict[str, Any] | None = None,
        parse: Callable[[str], dict[str, Any]] = json.loads,
        wait_s: float = 30.0,
    ) -> CallClient:
        """Place a call on the server at ``base_url`` (``http://host:port``) and wait for the channel to open.

        Args:
            base_url: the server.
            api_key: sent as ``Authorization: Bearer``.
            session: sent as the ``session`` field of a multipart form (a raw ``application/sdp`` body without).
            parse: turns each server event's text into a dict (the tests validate it against the SDK here).
            wait_s: bound on the HTTP exchange and on the channel opening.

        Raises:
            httpx.HTTPStatusError: the server refused the offer.
            TimeoutError: the channel did not open in time.
        """
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        mic = PlayoutTrack(start_cushion_ms=0)  # the caller speaks at once
        pc.addTrack(mic)
        channel = pc.createDataChannel("oai-events")
        client = cls(pc, channel, mic, parse)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", client._on_message)
        pc.on("track", client._on_track)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            offer = without_candidates(pc.localDescription.sdp)
            response = await post_offer(base_url, offer, api_key=api_key, session=session, wait_s=wait_s)
            response.raise_for_status()
            client.location = response.headers.get("location", "")
            client.call_id = client.location.rsplit("/", 1)[-1]
            await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            async with asyncio.timeout(wait_s):
                await opened.wait()
        except BaseException:
            await client.close()
            raise
        return client

    # the server's side -----------------------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        assert isinstance(message, str), "server events are text"
        self.add(self.parse(message))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            mono = frame_to_mono(frame)  # type: ignore[arg-type]
            pcm = np.clip(mono * _INT16_SCALE, -32768, 32767).astype("<i2")
            self.heard += pcm.tobytes()
            self.frames.append(HeardFrame(time.perf_counter(), int(np.abs(pcm).max(initial=0))))
            self._frame.set()

    # what a test or the bench does ----------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        """Send one client event on the data channel."""
        self.channel.send(json.dumps(event))

    async def speak(self, pcm16: bytes) -> None:
        """Queue 24 kHz mono PCM16 on the microphone; it goes out in real time, 20 ms a frame."""
        self._spoken += 1
        ids = PartIds("resp_mic", f"item_mic_{self._spoken}", 0, 0)
        await self.mic.play(OutputAudio(ids, pcm16, AudioFormat.PCM16, EventBuilder(Dialect.GA)))

    async def spoken(self) -> None:
        """Return once everything given to `speak` has gone out."""
        await self.mic.drained()

    def heard_audio_ms(self) -> float:
        """Milliseconds of non-silent audio decoded so far."""
        return sum(20.0 for frame in self.frames if frame.peak >= SILENT_PEAK)

    async def until_heard(self, ms: float) -> None:
        """Return once ``ms`` milliseconds of non-silent audio have been decoded."""
        async with asyncio.timeout(WAIT_GUARD_S):
            while self.heard_audio_ms() < ms:
                self._frame.clear()
                await self._frame.wait()

    async def until_quiet(self, ms: float) -> None:
        """Return once the last ``ms`` milliseconds decoded were silent (what was playing has arrived)."""
        frames = max(1, round(ms / 20))
        async with asyncio.timeout(WAIT_GUARD_S):
            while len(self.frames) < frames or any(f.peak >= SILENT_PEAK for f in self.frames[-frames:]):
                self._frame.clear()
                await self._frame.wait()

    async def close(self) -> None:
        """Hang up from this side: close the peer connection and stop listening."""
        self.mic.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def without_candidates(sdp: str) -> str:
    """``sdp`` with its ICE candidates removed: a browser's offer as it is POSTed (candidates trickle)."""
    lines = [
        line for line in sdp.splitlines() if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    ]
    return "\r\n".join(lines) + "\r\n"


async def post_offer(
    base_url: str,
    offer: str,
    *,
    api_key: str | None = None,
    session: dict[str, Any] | None = None,
    wait_s: float = 30.0,
) -> httpx.Response:
    """``POST /v1/realtime/calls`` as a browser (raw SDP) or, with ``session``, as the openai SDKs (a form)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/v1/realtime/calls"
    async with httpx.AsyncClient(timeout=wait_s) as http:
        if session is None:
            return await http.post(url, content=offer, headers={**headers, "Content-Type": "application/sdp"})
        files = {
            "sdp": (None, offer.encode(), "application/sdp"),
            "session": (None, json.dumps(session).encode(), "application/json"),
        }
        return await http.post(url, files=files, headers=headers)
