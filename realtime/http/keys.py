"""Who holds a key: the server's API key, and the ephemeral keys (``ek_...``) minted from it.

An ephemeral key opens Realtime sessions (the WebSocket, and WebRTC calls) and nothing else; it may carry a
session configuration that every session it opens starts with (docs/PROTOCOL.md §1.8). OpenAI's rules, read
from openai-python's ``client_secret_create_params``: a key lives 10 s to 2 h (600 s when the client does not
say), and "a secret can be used to create multiple sessions until it expires; the session itself may continue
after that time". So a key here is not single-use: every session it opens before its expiry is accepted, and
a session started in time runs to its own limits.

The store is bounded: at most ``capacity`` keys holding at most `STORE_BYTES` of bound configuration
(counted as the size of the request that minted each), each for at most the configured lifetime. Expired keys
are purged at each mint; when the live ones fill either bound, the oldest make room. The demo page's keys have
a store of their own, so an open demo cannot crowd out an application's keys. Keys are kept only as SHA-256
digests, so neither a lookup's timing nor a dump of the store gives a key away, and no key is ever logged.

Event loop only (no locks): the access layer and the client-secrets routes run on the server's loop.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from realtime.wire.session_config import SessionConfig

EPHEMERAL_PREFIX = "ek_"  # OpenAI's prefix; @openai/agents-realtime lets a browser use only such keys
KEY_RANDOM_BYTES = 16  # 128 random bits: "ek_" + 32 hex digits, the length of OpenAI's keys
STORE_BYTES = 32 * 1024 * 1024  # bound configurations held at once (a request is at most 256 KiB)
KEY_OVERHEAD_BYTES = 512  # what one key costs beyond its configuration (digest, entry, dict slot)
Clock = Callable[[], float]


@dataclass(frozen=True)
class Grant:
    """What the key presented for a Realtime session allows.

    Attributes:
        ephemeral: the key was an ephemeral key (False: the server's key, or any key on an open server).
        session: the configuration bound to the ephemeral key (every session it opens starts with it), or
            None for the server's defaults.
    """

    ephemeral: bool = False
    session: SessionConfig | None = None


class Refusal(enum.Enum):
    """Why a presented key was not accepted (each becomes ``invalid_api_key``, as OpenAI answers every key it
    does not take: 401 on HTTP, the ``error`` event then close 1008 on a WebSocket)."""

    MISSING = "missing"
    WRONG = "wrong"
    EPHEMERAL_UNKNOWN = "ephemeral_unknown"  # never minted, or expired (purged keys cannot be told apart)
    EPHEMERAL_ELSEWHERE = "ephemeral_elsewhere"  # an ephemeral key on a route that is not Realtime


class KeyRefused(Exception):
    """A presented key was not accepted; ``reason`` says why (`refusal_message` words it for the client)."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


def refusal_message(reason: Refusal, *, websocket: bool) -> str:
    """The ``error.message`` of a refusal; never repeats the key the client sent."""
    ways = (
        "'Authorization: Bearer <key>', an 'api-key' header, the 'openai-insecure-api-key.<key>' subprotocol "
        "or '?api_key=<key>'"
        if websocket
        else "'Authorization: Bearer <key>' or an 'api-key' header"
    )
    if reason is Refusal.EPHEMERAL_UNKNOWN:
        return (
            "The ephemeral key is unknown or has expired. Mint a new one with POST /v1/realtime/client_secrets "
            "and open the session before it expires."
        )
    if reason is Refusal.EPHEMERAL_ELSEWHERE:
        return (
            "Ephemeral keys (ek_...) open Realtime sessions only (the WebSocket and /v1/realtime/calls). Pass "
            f"the server's API key as {ways} for this route."
        )
    which = "No API key was" if reason is Refusal.MISSING else "An incorrect API key was"
    return f"{which} provided. Pass the server's key as {ways}."


@dataclass
class _Minted:
    deadline: float  # on the monotonic clock
    session: SessionConfig | None
    size: int  # bytes charged against STORE_BYTES


class _Pool:
    """Keys of one issuer, oldest first, under a count and a byte bound (event loop only)."""

    def __init__(self, capacity: int, clock: Clock) -> None:
        self._capacity = capacity
        self._clock = clock
        self._minted: OrderedDict[bytes, _Minted] = OrderedDict()  # digest -> key
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._minted)

    def add(self, digest: bytes, minted: _Minted) -> None:
        self.purge()
        while self._minted and (
            len(self._minted) >= self._capacity or self._bytes + minted.size > STORE_BYTES
        ):
            _, oldest = self._minted.popitem(last=False)  # full of live keys: the oldest goes
            self._bytes -= oldest.size
        self._minted[digest] = minted
        self._bytes += minted.size

    def live(self, digest: bytes) -> _Minted | None:
        minted = self._minted.get(digest)
        if minted is not None and minted.deadline <= self._clock():
            self._drop(digest)
            return None
        return minted

    def purge(self) -> None:
        now = self._clock()
        for digest in [d for d, minted in self._minted.items() if minted.deadline <= now]:
            self._drop(digest)

    def _drop(self, digest: bytes) -> None:
        self._bytes -= self._minted.pop(digest).size


class Keys:
    """The server's API key and the bounded stores of ephemeral keys minted under it.

    The demo page's keys (``POST /demo/client_secrets``, which ``--public-demo`` opens to anyone) have a store
    of their own, so a flood of them cannot push out the keys an application's backend minted.

    Args:
        server_key: the server's ``--api-key``, or None for an open server.
        capacity: ephemeral keys held at once per store (``--max-client-secrets``).
        clock: monotonic seconds (expiry); tests pass their own.
        wall: Unix seconds (the ``expires_at`` a client is shown).
    """

    def __init__(
        self, server_key: str | None, *, capacity: int, clock: Clock = time.monotonic, wall: Clock = time.time
    ) -> None:
        self._server_key = server_key or None
        self._clock = clock
        self._wall = wall
        self._minted = _Pool(capacity, clock)
        self._demo = _Pool(capacity, clock)

    @property
    def keyed(self) -> bool:
        """The server has an API key (routes other than the open ones need it)."""
        return self._server_key is not None

    def __len__(self) -> int:
        """Ephemeral keys held now, both stores (expired ones included until the next purge)."""
        return len(self._minted) + len(self._demo)

    def is_server_key(self, presented: str | None) -> bool:
        """True when the server has no key, or ``presented`` is it (compared in constant time)."""
        if self._server_key is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self._server_key.encode())

    def check_server_key(self, presented: str | None) -> None:
        """Require the server's key (any key on an open server).

        Raises:
            KeyRefused: the key is missing or wrong, or is an ephemeral key (which opens Realtime sessions only).
        """
        if self.is_server_key(presented):
            return
        if presented is None:
            raise KeyRefused(Refusal.MISSING)
        if presented.startswith(EPHEMERAL_PREFIX):
            raise KeyRefused(Refusal.EPHEMERAL_ELSEWHERE)
        raise KeyRefused(Refusal.WRONG)

    def verify_for_realtime(self, presented: str | None) -> Grant:
        """What ``presented`` allows for a Realtime session (the WebSocket, or a WebRTC call).

        The server's key (or any key on an open server) gets the server's defaults; a live ephemeral key gets
        its bound session. A key that looks ephemeral (``ek_``) but is unknown or expired is refused even on
        an open server: the client asked for a grant it does not have, and silently dropping its bound session
        would hide that.

        Raises:
            KeyRefused: the key is missing, wrong, or an unknown or expired ephemeral key.
        """
        if self._server_key is not None and self.is_server_key(presented):
            return Grant()
        if presented is not None and presented.startswith(EPHEMERAL_PREFIX):
            digest = _digest(presented)
            minted = self._minted.live(digest) or self._demo.live(digest)
            if minted is None:
                raise KeyRefused(Refusal.EPHEMERAL_UNKNOWN)
            return Grant(ephemeral=True, session=minted.session)
        if self._server_key is None:
            return Grant()
        raise KeyRefused(Refusal.MISSING if presented is None else Refusal.WRONG)

    def mint(
        self, lifetime_s: float, session: SessionConfig | None, size: int = 0, *, demo: bool = False
    ) -> tuple[str, int]:
        """A new ephemeral key living ``lifetime_s`` seconds, bound to ``session``.

        Args:
            lifetime_s: seconds until the key stops opening sessions.
            session: the configuration every session it opens starts with, or None.
            size: bytes of the request that described ``session`` (its charge against `STORE_BYTES`).
            demo: the key is the demo page's (its own store).

        Returns:
            The key (``ek_`` + 32 hex digits) and its expiry in Unix seconds.
        """
        value = EPHEMERAL_PREFIX + secrets.token_hex(KEY_RANDOM_BYTES)
        minted = _Minted(self._clock() + lifetime_s, session, size + KEY_OVERHEAD_BYTES)
        (self._demo if demo else self._minted).add(_digest(value), minted)
        return value, int(self._wall() + lifetime_s)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()
