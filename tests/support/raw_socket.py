"""A WebSocket client on a bare, blocking TCP socket, for clients that misbehave at the transport level.

It does the opening handshake, then writes masked frames and reads nothing unless asked: a client that
stops reading, leaves with a TCP reset (``SO_LINGER`` 0) or half-closes (FIN) without a close frame. Its
receive buffer is kept small so the server's writes back up after a few kilobytes, as they would with a
far-away or stuck peer.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import numpy as np

OP_TEXT = 0x1
OP_BINARY = 0x2
SMALL_RCVBUF = 4096
SEND_TIMEOUT_S = 5.0
_HEAD_END = b"\r\n\r\n"
_SHORT = 126
_MEDIUM = 65536


class RawSocketClient:
    """One connection; every method blocks (call it from a thread or a sync test)."""

    def __init__(self, port: int, path: str = "/v1/realtime", rcvbuf: int = SMALL_RCVBUF) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        sock.settimeout(SEND_TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path}?model=step-audio-2-mini HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while _HEAD_END not in head:
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError("the server closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.sock = sock

    def send_frame(self, opcode: int, payload: bytes) -> bool:
        """Write one masked frame; False when the server stopped reading (the write timed out)."""
        mask = os.urandom(4)
        size = len(payload)
        if size < _SHORT:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < _MEDIUM:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | _SHORT, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        try:
            self.sock.sendall(header + mask + _mask(payload, mask))
        except (TimeoutError, OSError):
            return False
        return True

    def send_event(self, event: dict[str, Any]) -> bool:
        """Write one JSON text frame (see `send_frame`)."""
        return self.send_frame(OP_TEXT, json.dumps(event).encode())

    def reset(self) -> None:
        """Leave with a TCP reset: no close frame, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def half_close(self) -> None:
        """Send FIN (no close frame) and keep the socket open, never reading."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Drop the socket."""
        self.sock.close()


def _mask(payload: bytes, mask: bytes) -> bytes:
    data = np.frombuffer(payload, dtype=np.uint8)
    key = np.resize(np.frombuffer(mask, dtype=np.uint8), data.size)
    return (data ^ key).tobytes()
