"""A caller's SDP offer, checked, and the server's answer: one aiortc peer connection per call.

`check_offer` refuses what cannot become a call with a message a person can act on (aiortc's parser accepts
almost any text, so the checks that matter are ours): not SDP at all, no audio section, an audio section that
will not receive the server's audio, no Opus, video. `negotiate` applies the offer to a fresh
``RTCPeerConnection`` with the server's audio track on Opus, creates the answer and gathers the server's ICE
candidates into it: a browser's offer carries none (it trickles them), so the server learns the browser's
addresses from its connectivity checks (peer-reflexive candidates), and the browser learns the server's from
the answer.

ICE (docs/PROTOCOL.md §11.5): host candidates on every interface but loopback (aioice skips 127.0.0.1, so a
browser on the same machine reaches the server's LAN address); one STUN and one TURN server from
``--webrtc-ice-server`` (aioice uses the first of each); ``--webrtc-public-ip`` adds, for every IPv4 host
candidate, the same port at that address, for a server behind a 1:1 NAT (a cloud VM's public IP). The UDP
ports are the kernel's choice: aioice binds port 0 and offers no range.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from realtime.config_groups import IceServerSpec
from realtime.webrtc.playout import PlayoutTrack

MAX_OFFER_BYTES = 128 * 1024  # a browser's offer is 2-6 KB; candidates and many codecs stay far below this
OPUS = "audio/opus"
_RECEIVING = frozenset({"sendrecv", "recvonly"})  # the caller's audio directions that take our audio
_NEGOTIATION_ERRORS = (ValueError, OperationError, InvalidAccessError, InvalidStateError, InternalError)
_PUBLIC_FOUNDATION_SUFFIX = "9"  # keeps an advertised candidate's foundation distinct from its host twin


class OfferError(ValueError):
    """The offer cannot become a call; the message says why (it becomes a 400 on ``param: sdp``)."""


class NoCandidates(Exception):
    """The server gathered no ICE candidate: no usable network interface (a 500, the server's fault)."""


@dataclass(frozen=True)
class IceSettings:
    """How the server's side of a call finds its candidates.

    Attributes:
        servers: STUN / TURN servers as ``(url, username, credential)`` (`realtime.config.parse_ice_server`);
            none: host candidates only (never aiortc's default Google STUN).
        public_ip: an IPv4 address to advertise beside each IPv4 host candidate (1:1 NAT), or None.
    """

    servers: tuple[IceServerSpec, ...] = ()
    public_ip: str | None = None

    def configuration(self) -> RTCConfiguration:
        """The aiortc configuration (an empty server list: aiortc would otherwise ask Google's STUN)."""
        servers = [
            RTCIceServer(url, username=username or None, credential=credential or None)
            for url, username, credential in self.servers
        ]
        return RTCConfiguration(iceServers=servers)


@dataclass(frozen=True)
class OfferShape:
    """What the answer will hold, read off a checked offer.

    Attributes:
        has_channel: the offer has a data channel section (the ``oai-events`` channel comes on it).
        sends_audio: the caller sends audio (a microphone): the server reads its track.
    """

    has_channel: bool
    sends_audio: bool


def check_offer(text: str) -> OfferShape:
    """Refuse what cannot become a call.

    Raises:
        OfferError: not an SDP offer, no audio section, an audio section that will not receive the server's
            audio, no Opus, or video.
    """
    if not text.lstrip().startswith("v=0"):
        raise OfferError("The request body is not an SDP offer: an SDP offer starts with 'v=0'.")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser asserts on some malformed lines
        raise OfferError(f"The SDP offer could not be parsed ({type(exc).__name__}: {exc}).") from None
    kinds = [media.kind for media in description.media]
    if "video" in kinds:
        raise OfferError("The SDP offer has a video section; calls carry audio and a data channel only.")
    audio = [media for media in description.media if media.kind == "audio"]
    if len(audio) != 1:
        raise OfferError(f"The SDP offer must have exactly one audio section (m=audio); it has {len(audio)}.")
    if kinds.count("application") > 1:
        raise OfferError("The SDP offer has more than one data channel section (m=application).")
    section = audio[0]
    if section.direction not in _RECEIVING:
        raise OfferError(
            f"The SDP offer's audio section is '{section.direction}': it must be sendrecv or recvonly, so the "
            "caller hears the answers."
        )
    if not any(codec.mimeType.lower() == OPUS for codec in section.rtp.codecs):
        raise OfferError("The SDP offer's audio section has no Opus codec (a=rtpmap:<pt> opus/48000/2).")
    return OfferShape(has_channel="application" in kinds, sends_audio=section.direction == "sendrecv")


async def negotiate(pc: RTCPeerConnection, offer: str, track: PlayoutTrack, ice: IceSettings) -> str:
    """Apply ``offer`` (checked by `check_offer`) to ``pc`` with ``track`` as the server's Opus audio; gather.

    Returns:
        the answer SDP, with the server's candidates.

    Raises:
        OfferError: aiortc refused the offer (ICE credentials or DTLS fingerprint missing, ...).
        NoCandidates: the server gathered no candidate (no usable network interface).
    """
    transceiver = pc.addTransceiver(track, direction="sendrecv")
    capabilities = RTCRtpSender.getCapabilities("audio")
    transceiver.setCodecPreferences([c for c in capabilities.codecs if c.mimeType.lower() == OPUS])
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except _NEGOTIATION_ERRORS as exc:
        raise OfferError(f"The SDP offer was refused: {exc}.") from None
    answer = pc.localDescription.sdp
    if "a=candidate:" not in answer:
        raise NoCandidates(
            "the server has no network interface to offer ICE candidates on (loopback is skipped)"
        )
    return advertise(answer, ice.public_ip) if ice.public_ip else answer


def advertise(answer: str, public_ip: str) -> str:
    """Add, after each IPv4 host candidate of ``answer``, the same candidate at ``public_ip`` (1:1 NAT)."""
    lines: list[str] = []
    for line in answer.splitlines():
        lines.append(line)
        if not line.startswith("a=candidate:"):
            continue
        fields = line[len("a=candidate:") :].split()
        # foundation component transport priority address port "typ" type ...
        if len(fields) < 8 or fields[7] != "host" or ":" in fields[4] or fields[4] == public_ip:
            continue
        fields[0] += _PUBLIC_FOUNDATION_SUFFIX
        fields[3] = str(max(int(fields[3]) - 1, 0))  # just below its host twin
        fields[4] = public_ip
        lines.append("a=candidate:" + " ".join(fields))
    return "\r\n".join(lines) + "\r\n"
