"""Our server in front of the real SGLang rig (one worker or the gateway), and the SDK steps its tests share.

The rig's tests (tests/step_audio2_sglang/) start our server on ``--backend sglang`` pointed at a running
SGLang worker or gateway, then drive it with the official openai SDK; these are the pieces they have in common.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from realtime.config import ServerConfig
from realtime.config_groups import LLMOptions
from tests.support.server_harness import ServerHandle, start_server

EVENT_TIMEOUT_S = 120.0  # CPU SGLang with dummy weights: a first token can take tens of seconds under load


def start_our_server(llm_url: str, checkpoint: Path, cache_dir: Path, **changes: Any) -> ServerHandle:
    """Our server on the ``sglang`` (HTTP) backend at ``llm_url`` with the rig's tiny checkpoint."""
    config = ServerConfig(
        backend="sglang",
        llm=LLMOptions(sglang_url=llm_url),
        model_path=str(checkpoint),
        cache_dir=cache_dir,
        max_audio_delta_ms=100,
    )
    return start_server(dataclasses.replace(config, **changes))


def realtime_client(server: ServerHandle) -> AsyncOpenAI:
    """The official SDK, pointed at ``server``'s Realtime endpoint."""
    return AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")


async def next_event(conn: Any) -> Any:
    """The next server event, bounded by `EVENT_TIMEOUT_S`."""
    return await asyncio.wait_for(conn.recv(), EVENT_TIMEOUT_S)


async def open_session(conn: Any, max_output_tokens: int) -> None:
    """Take ``session.created``, then set brief instructions and an output cap and wait for the update."""
    assert (await next_event(conn)).type == "session.created"
    await conn.session.update(
        session={"type": "realtime", "instructions": "Be brief.", "max_output_tokens": max_output_tokens}
    )
    assert (await next_event(conn)).type == "session.updated"
