"""The whole chain on real SGLang: OpenAI SDK -> our Realtime server -> SGLang (our plugin, CPU, dummy weights)
-> streaming parser -> tiny Token2Wav -> audio deltas; and a cancel that SGLang counts as an aborted request.

The session SGLang server adds a logit bias on the ``<audio_N>`` ids (``--preferred-sampling-params``), so the
random-weight model emits mostly speech codes and Token2Wav has something to say.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.step_audio2_sglang.conftest import SGLangServer
from tests.support.server_harness import ServerHandle
from tests.support.sglang.our_server import next_event, open_session, realtime_client, start_our_server

# Generous per-test limit: the first test of a session also pays for the SGLang start-up (minutes on a busy CI box).
pytestmark = [pytest.mark.sglang, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "step-audio-2-mini"
SHORT_REPLY_TOKENS = 48
LONG_REPLY_TOKENS = 3000
ABORT_POLL_S = 0.2
ABORT_WAIT_S = 10.0
ABORTED_METRIC = re.compile(r"^sglang:num_aborted_requests_total(?:\{[^}]*\})?\s+([0-9.e+]+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def chain_server(
    sglang_server: SGLangServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """Our Realtime server on the ``sglang`` (HTTP) backend pointing at the session's SGLang server."""
    cache = Path(tmp_path_factory.mktemp("chain-t2w-cache"))
    handle = start_our_server(sglang_server.url, sglang_server.checkpoint.path, cache)
    yield handle
    handle.stop()


def _aborted_total(sglang_url: str) -> float:
    text = httpx.get(f"{sglang_url}/metrics", timeout=10.0).text
    return sum(float(value) for value in ABORTED_METRIC.findall(text))


async def test_sdk_spoken_reply_streams_audio_from_real_sglang(chain_server: ServerHandle) -> None:
    async with realtime_client(chain_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, SHORT_REPLY_TOKENS)
        await conn.response.create()
        events = []
        while True:
            event = await next_event(conn)
            assert event.type != "error", event
            events.append(event)
            if event.type == "response.done":
                break
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_audio.delta"]
    assert deltas, kinds
    audio = b"".join(base64.b64decode(e.delta) for e in deltas)
    assert len(audio) > 0 and len(audio) % 2 == 0
    assert kinds.index("response.output_audio.done") > kinds.index("response.output_audio.delta")
    done = events[-1].response
    # The bias makes the model speak until the token limit: an incomplete (max_output_tokens) reply.
    assert done.status in ("incomplete", "completed"), done
    assert done.usage is not None and 0 < done.usage.output_tokens <= SHORT_REPLY_TOKENS


async def test_sdk_cancel_mid_reply_is_aborted_in_sglang(
    chain_server: ServerHandle, sglang_server: SGLangServer
) -> None:
    before = _aborted_total(sglang_server.url)
    async with realtime_client(chain_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, LONG_REPLY_TOKENS)
        await conn.response.create()
        while (event := await next_event(conn)).type != "response.output_audio.delta":
            assert event.type not in ("error", "response.done"), event
        await conn.response.cancel()
        while (event := await next_event(conn)).type != "response.done":
            assert event.type != "error", event
    assert event.response.status == "cancelled", event.response
    assert event.response.usage is None or event.response.usage.output_tokens < LONG_REPLY_TOKENS
    deadline = asyncio.get_running_loop().time() + ABORT_WAIT_S
    while _aborted_total(sglang_server.url) <= before:
        assert asyncio.get_running_loop().time() < deadline, (
            "SGLang never counted the cancelled request as aborted"
        )
        await asyncio.sleep(ABORT_POLL_S)


# The tiny checkpoint's tokenizer is byte-level without merges: one prompt token per byte of text.
CONTEXT_LENGTH = 4096
NEAR_FULL_INSTRUCTIONS = "x" * 3900  # leaves ~160 tokens of the context for the answer


async def _respond(conn: Any) -> Any:
    await conn.response.create()
    while (event := await next_event(conn)).type != "response.done":
        assert event.type != "error", event
    return event.response


async def _say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    while (await next_event(conn)).type != "conversation.item.done":
        pass


async def test_sdk_default_inf_response_fits_the_real_context(chain_server: ServerHandle) -> None:
    """``max_output_tokens`` left at ``"inf"`` with a prompt near the 4096-token context: SGLang refused
    these with HTTP 400 before the answer budget was fitted (issue 19)."""
    async with realtime_client(chain_server).realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).type == "session.created"
        await conn.session.update(session={"type": "realtime", "instructions": NEAR_FULL_INSTRUCTIONS})
        assert (await next_event(conn)).type == "session.updated"
        await _say(conn, "hello there")
        done = await _respond(conn)
    assert done.status in ("completed", "incomplete"), done
    assert done.max_output_tokens == "inf"
    assert done.usage.input_tokens > len(NEAR_FULL_INSTRUCTIONS)  # SGLang's own count of our prompt
    assert (
        0 < done.usage.output_tokens and done.usage.input_tokens + done.usage.output_tokens <= CONTEXT_LENGTH
    )


async def test_sdk_conversation_past_the_real_context_drops_old_turns(chain_server: ServerHandle) -> None:
    """Two 2500-byte user turns do not fit together: ``truncation: auto`` drops the first and answers."""
    async with realtime_client(chain_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, SHORT_REPLY_TOKENS)
        answers = []
        for _ in range(2):
            await _say(conn, "y" * 2500)
            answers.append(await _respond(conn))
    assert all(a.status in ("completed", "incomplete") for a in answers), answers
    first, second = (a.usage.input_tokens for a in answers)
    assert second < first + 2500  # the first 2500-byte turn left the prompt
