"""The context length over the fake SGLang, which reports and enforces it with SGLang 0.5.23's texts.

Backend level: the HTTP backend learns the limit and maps SGLang's refusals to ``context_length_exceeded``.
End to end (openai SDK -> our server -> fake SGLang): a default ``"inf"`` response completes; a conversation
driven past the context keeps answering with ``truncation: "auto"`` (and ``retention_ratio`` keeps the prompt's
prefix stable), and fails with the precise error, without reaching SGLang, with ``truncation: "disabled"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from realtime.backends.base import GenerationInput, PromptTurn, SamplingParams
from realtime.backends.context import CODE_CONTEXT_LENGTH_EXCEEDED, ContextLengthExceeded
from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig
from realtime.backends.sglang.stream import server_abort_error, sglang_error
from realtime.errors import INVALID_REQUEST
from tests.realtime.backends.sglang.test_e2e_fake_sglang import REPLY
from tests.support.fake_sglang import SCHEDULER_INPUT_MARGIN, FakeSGLangServer, FakeSGLangState
from tests.support.server_harness import ServerHandle
from tests.support.sglang_fixtures import fake_sglang, http_backend, start_on_fake, tiny_model_dir
from tests.support.wire_check import validate_frame

__all__ = ["fake_sglang", "http_backend", "tiny_model_dir"]

MODEL = "step-audio-2-mini"
SMALL_CONTEXT = 512
LONG_USER_TEXT = " ".join(["hi"] * 60)  # 119 prompt tokens in the tiny tokenizer
EXCHANGES = 6


def request(rid: str, max_new_tokens: int | None = None) -> GenerationInput:
    turns = [PromptTurn(role="user", text="hi there")]
    return GenerationInput(rid=rid, turns=turns, sampling=SamplingParams(max_new_tokens=max_new_tokens))


# ------------------------------------------------------------------------------------------- backend


async def test_the_context_length_is_what_sglang_admits(http_backend: SGLangHTTPBackend) -> None:
    # /v1/models says 4096; the scheduler admits prompts below max_req_input_len = 4090
    assert http_backend.context_length == 4096 - SCHEDULER_INPUT_MARGIN + 1


async def test_a_configured_context_length_can_only_lower_it(
    fake_sglang: FakeSGLangServer, tiny_model_dir: Path
) -> None:
    for configured, expected in ((1000, 1000), (100_000, 4096 - SCHEDULER_INPUT_MARGIN + 1)):
        config = SGLangHTTPConfig(url=fake_sglang.url, model_dir=tiny_model_dir, context_length=configured)
        backend = SGLangHTTPBackend(config)
        await backend.start()
        try:
            assert backend.context_length == expected
        finally:
            await backend.aclose()


async def test_the_count_is_what_sglang_reports(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    req = request("resp_count-0")
    chunks = [chunk async for chunk in http_backend.generate(req)]
    assert chunks[0].prompt_tokens == http_backend.count_prompt_tokens(req)
    (body,) = fake_sglang.state.requests
    # no cap: the whole rest of the context is the answer budget
    assert body["sampling_params"]["max_new_tokens"] == http_backend.context_length - chunks[0].prompt_tokens


async def test_sglang_refusing_the_total_is_context_length_exceeded(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    req = request("resp_total-0", max_new_tokens=5000)
    with pytest.raises(ContextLengthExceeded) as caught:
        [chunk async for chunk in http_backend.generate(req)]
    error = caught.value
    assert (error.code, error.error_type) == (CODE_CONTEXT_LENGTH_EXCEEDED, INVALID_REQUEST)
    assert error.prompt_tokens == http_backend.count_prompt_tokens(req)
    assert "maximum context length of 4096 tokens" in error.message
    assert fake_sglang.state.aborts == []  # refused before it started: nothing to abort


@pytest.mark.parametrize("margin", [0, 3], ids=["tokenizer-manager", "scheduler"])
async def test_sglang_refusing_the_prompt_is_context_length_exceeded(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend, margin: int
) -> None:
    req = request(f"resp_prompt-{margin}", max_new_tokens=1)
    prompt = http_backend.count_prompt_tokens(req)
    fake_sglang.state.context_length = prompt + margin  # refused at once (0) or aborted by the scheduler (3)
    with pytest.raises(ContextLengthExceeded) as caught:
        [chunk async for chunk in http_backend.generate(req)]
    assert caught.value.prompt_tokens == prompt
    assert caught.value.code == CODE_CONTEXT_LENGTH_EXCEEDED


@pytest.mark.parametrize(
    ("message", "status", "code", "prompt"),
    [
        ("The input (5000 tokens) is longer than the model's context length (4096 tokens).", 400,
         CODE_CONTEXT_LENGTH_EXCEEDED, 5000),
        ("Requested token count exceeds the model's maximum context length of 4096 tokens. You requested a "
         "total of 4186 tokens: 90 tokens from the input messages and 4096 tokens for the completion.", None,
         CODE_CONTEXT_LENGTH_EXCEEDED, 90),
        ("Duplicate request ID detected: resp_1", 400, "duplicate_request_id", None),
        ("unknown field `foo`", 400, "http_400", None),
        ("something broke", None, "server_error", None),
    ],
)  # fmt: skip
def test_sglang_errors_get_precise_codes(
    message: str, status: int | None, code: str, prompt: int | None
) -> None:
    error = sglang_error(message, status)
    assert error.code == code and message in error.message
    if isinstance(error, ContextLengthExceeded):
        assert (error.prompt_tokens, error.error_type) == (prompt, INVALID_REQUEST)
    else:
        assert error.error_type == "server_error"  # our own request was wrong: not the client's mistake


def test_scheduler_aborts_for_length_are_context_errors_others_stay_aborts() -> None:
    too_long = {
        "message": "Multimodal prompt is too long after expanding multimodal tokens. ...",
        "status_code": 400,
    }
    assert server_abort_error(too_long).code == CODE_CONTEXT_LENGTH_EXCEEDED
    assert server_abort_error({"message": "out of memory", "status_code": 500}).code == "aborted_by_server"


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def small_fake() -> Iterator[FakeSGLangServer]:
    state = FakeSGLangState(incremental=True, stream_interval=4, context_length=SMALL_CONTEXT)
    state.script = lambda body: REPLY
    with FakeSGLangServer(state) as server:
        yield server


@pytest.fixture(scope="module")
def server(small_fake: FakeSGLangServer, tiny_model_dir: Path, t2w_cache: Path) -> Iterator[ServerHandle]:
    handle = start_on_fake(small_fake, tiny_model_dir, t2w_cache)
    yield handle
    handle.stop()


async def next_event(conn: Any) -> dict[str, Any]:
    return validate_frame((await conn.recv_bytes()).decode(), "ga")


async def until(conn: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        events.append(await next_event(conn))
        assert events[-1]["type"] != "error", events[-1]
        if events[-1]["type"] == kind:
            return events


async def exchange(conn: Any, text: str) -> dict[str, Any]:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await until(conn, "conversation.item.done")
    await conn.response.create()
    return (await until(conn, "response.done"))[-1]["response"]


async def converse(server: ServerHandle, truncation: Any, exchanges: int) -> list[dict[str, Any]]:
    client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    async with client.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn))["type"] == "session.created"
        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "truncation": truncation}
        )
        updated = (await until(conn, "session.updated"))[-1]
        assert updated["session"]["truncation"] == truncation
        return [await exchange(conn, LONG_USER_TEXT) for _ in range(exchanges)]


async def test_a_default_inf_response_completes(server: ServerHandle, small_fake: FakeSGLangServer) -> None:
    small_fake.state.requests.clear()
    (done,) = await converse(server, "auto", 1)
    assert done["status"] == "completed", done
    assert done["max_output_tokens"] == "inf"
    (body,) = small_fake.state.requests
    context = SMALL_CONTEXT - SCHEDULER_INPUT_MARGIN + 1
    assert body["sampling_params"]["max_new_tokens"] == context - done["usage"]["input_tokens"]


async def test_auto_truncation_keeps_a_long_conversation_answering(
    server: ServerHandle, small_fake: FakeSGLangServer
) -> None:
    small_fake.state.requests.clear()
    responses = await converse(server, "auto", EXCHANGES)
    assert [r["status"] for r in responses] == ["completed"] * EXCHANGES, responses[-1]
    bodies = small_fake.state.requests
    lengths = [len(body["input_ids"]) for body in bodies]
    assert max(lengths) + 64 <= SMALL_CONTEXT  # the answer always keeps its minimum
    assert lengths[-1] < sum(lengths[:2])  # the earliest turns left the prompt
    for body, done in zip(bodies, responses, strict=True):
        assert body["sampling_params"]["max_new_tokens"] + len(body["input_ids"]) <= SMALL_CONTEXT
        assert done["usage"]["input_tokens"] == len(body["input_ids"])


async def test_retention_ratio_cuts_once_and_keeps_the_prefix(
    server: ServerHandle, small_fake: FakeSGLangServer
) -> None:
    small_fake.state.requests.clear()
    truncation = {"type": "retention_ratio", "retention_ratio": 0.5}
    responses = await converse(server, truncation, EXCHANGES)
    assert all(r["status"] == "completed" for r in responses), responses
    prompts = [body["input_ids"] for body in small_fake.state.requests]
    cuts = [i for i in range(1, len(prompts)) if prompts[i][: len(prompts[i - 1])] != prompts[i - 1]]
    assert cuts, "the conversation never needed a cut"
    first = cuts[0]
    assert first + 1 < len(prompts) and first + 1 not in cuts  # after a cut, the next turn reuses the prefix
    assert prompts[first + 1][: len(prompts[first])] == prompts[first]


async def test_disabled_truncation_fails_precisely_without_calling_sglang(
    server: ServerHandle, small_fake: FakeSGLangServer
) -> None:
    small_fake.state.requests.clear()
    responses = await converse(server, "disabled", 3)
    assert [r["status"] for r in responses[:2]] == ["completed", "completed"]
    failed = responses[2]
    assert failed["status"] == "failed"
    error = failed["status_details"]["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", CODE_CONTEXT_LENGTH_EXCEEDED)
    assert "truncation is disabled" in error["message"]
    assert failed["usage"]["input_tokens"] > SMALL_CONTEXT - 64
    assert failed["usage"]["output_tokens"] == 0
    assert len(small_fake.state.requests) == 2  # the third request never reached SGLang
