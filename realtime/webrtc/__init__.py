"""WebRTC calls (``POST /v1/realtime/calls``): the session core over a peer connection instead of a WebSocket.

aiortc does ICE, DTLS, SRTP, SCTP and Opus (through PyAV); this package adapts it to the session core's
`Transport` seam (realtime/session/transport.py), so a call runs the same `Session` as a WebSocket:

- ``playout``: the server's audio track: output audio resampled to 48 kHz and paced in real time, 20 ms a
  frame; it knows what the peer has heard (the session's `Playback`).
- ``peer_audio``: the peer's Opus track decoded to the session's 24 kHz PCM16 input (`PeerAudio`).
- ``inbox``: the bounded queue of what reaches the session: data channel events, sideband events, track
  audio.
- ``call_transport``: `CallTransport`, the `Transport` of one call: events on the ``oai-events`` data channel
  and to every attached sideband WebSocket, audio on the track.
- ``offer``: the caller's SDP offer checked, the peer connection built from it, the answer with the server's
  candidates (ICE servers and the advertised address from the settings).
- ``calls``: `CallRegistry`: every call's lifecycle (pending until the channel opens, then the session, then
  the peer connection closed), the pending cap, the connect timeout, hangup.

The HTTP routes (realtime/http/calls_api.py) and the sideband WebSocket (realtime/http/sideband.py) sit on
top; docs/PROTOCOL.md §11 is the user's view.
"""
