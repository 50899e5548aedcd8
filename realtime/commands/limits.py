"""The ``realtime serve`` flags that bound what one client can hold (README "Security and limits")."""

from __future__ import annotations

import argparse
from typing import Any

from realtime.config import (
    DEFAULT_DECODER_MEMORY_MB,
    DEFAULT_DECODER_WAIT_S,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_MAX_CONVERSATION_AUDIO_S,
    DEFAULT_MAX_CONVERSATION_ITEMS,
    DEFAULT_MAX_CONVERSATION_MB,
    DEFAULT_MAX_OUT_OF_BAND,
    DEFAULT_SEND_TIMEOUT_S,
    DEFAULT_WS_PING_INTERVAL_S,
    DEFAULT_WS_PING_TIMEOUT_S,
)


def flag(
    parser: argparse.ArgumentParser | Any, *names: str, env: str, default: str, help: str, **kw: Any
) -> None:
    """Add a ``realtime serve`` flag whose help names its default and its environment variable."""
    # SUPPRESS keeps unset flags out of the namespace, so env vars and config defaults apply to them.
    parser.add_argument(
        *names, default=argparse.SUPPRESS, help=f"{help} (default: {default}; env STREAMVOICE_{env})", **kw
    )


def parse_origins(raw: str) -> tuple[str, ...]:
    """``--allowed-origins``: comma-separated origins, trailing slashes dropped."""
    return tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of README \"Security and limits\" (each maps to a `ServerConfig` field)."""
    limits = parser.add_argument_group("limits (README 'Security and limits')")
    flag(
        limits,
        "--send-timeout",
        env="SEND_TIMEOUT",
        default=f"{DEFAULT_SEND_TIMEOUT_S:g}",
        type=float,
        help="seconds a client may leave server frames unread before its session closes with 1008 "
        "send_timeout; a streamed HTTP answer (speech, chat, transcription) whose chunk waits that long is "
        "ended and its connection closed",
    )
    flag(
        limits,
        "--ws-ping-interval",
        env="WS_PING_INTERVAL",
        default=f"{DEFAULT_WS_PING_INTERVAL_S:g}",
        type=float,
        help="seconds between WebSocket keepalive pings; 0 disables them",
    )
    flag(
        limits,
        "--ws-ping-timeout",
        env="WS_PING_TIMEOUT",
        default=f"{DEFAULT_WS_PING_TIMEOUT_S:g}",
        type=float,
        help="seconds a pong may take; a dead peer is dropped within interval + timeout",
    )
    flag(
        limits,
        "--max-out-of-band",
        dest="max_out_of_band_responses",
        env="MAX_OUT_OF_BAND_RESPONSES",
        default=str(DEFAULT_MAX_OUT_OF_BAND),
        type=int,
        help="concurrent conversation:'none' responses per session; more get too_many_out_of_band_responses",
    )
    flag(
        limits,
        "--max-decoder-streams",
        env="MAX_DECODER_STREAMS",
        default="0 = sized from --decoder-memory-mb and the measured stream size",
        type=int,
        help="live speech decoder streams (spoken responses) across the server; a response that finds none "
        "free within --decoder-wait gets decoder_capacity_reached",
    )
    flag(
        limits,
        "--decoder-memory-mb",
        env="DECODER_MEMORY_MB",
        default=str(DEFAULT_DECODER_MEMORY_MB),
        type=int,
        help="memory budget for live decoder stream states when --max-decoder-streams is 0",
    )
    flag(
        limits,
        "--decoder-wait",
        dest="decoder_wait_seconds",
        env="DECODER_WAIT_SECONDS",
        default=f"{DEFAULT_DECODER_WAIT_S:g}",
        type=float,
        help="seconds a spoken response waits for a free decoder stream",
    )
    flag(
        limits,
        "--max-conversation-items",
        env="MAX_CONVERSATION_ITEMS",
        default=str(DEFAULT_MAX_CONVERSATION_ITEMS),
        type=int,
        help="items one conversation may hold; more get conversation_limit_reached",
    )
    flag(
        limits,
        "--max-conversation-mb",
        env="MAX_CONVERSATION_MB",
        default=str(DEFAULT_MAX_CONVERSATION_MB),
        type=int,
        help="MiB of text and audio one conversation may hold",
    )
    flag(
        limits,
        "--max-conversation-audio-seconds",
        env="MAX_CONVERSATION_AUDIO_SECONDS",
        default=f"{DEFAULT_MAX_CONVERSATION_AUDIO_S:g}",
        type=float,
        help="seconds of audio one conversation may hold",
    )
    flag(
        limits,
        "--drain-seconds",
        env="DRAIN_SECONDS",
        default=f"{DEFAULT_DRAIN_SECONDS:g}",
        type=float,
        help="on SIGTERM: how long active responses may finish (new sessions and responses are refused, "
        "/health says draining) before sessions close with 1001",
    )
