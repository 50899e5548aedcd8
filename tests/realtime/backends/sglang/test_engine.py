"""SGLangEngineBackend with a stand-in engine that yields SGLang's chunk dicts (the real engine: tests/step_audio2_sglang)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import pytest

from realtime.backends.base import BackendError, FinishReason, GenerationInput, PromptTurn, TokenChunk
from realtime.backends.sglang.engine import SGLangEngineBackend, SGLangEngineConfig
from realtime.backends.sglang.stream import StreamMode
from realtime.backends.sglang.vocab import ModelVocab
from tests.support.fake_sglang import SCHEDULER_INPUT_MARGIN, FakeSGLangState, _Generation
from tests.support.sglang_fixtures import tiny_model_dir, tiny_vocab

__all__ = ["tiny_model_dir", "tiny_vocab"]

EOT, AUDIO_0 = 151692, 151696
REPLY = [6, *(AUDIO_0 + c for c in range(4)), EOT]
LONG_REPLY = [AUDIO_0 + i for i in range(2000)]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


class StandInModelConfig:
    def __init__(self, context_len: int) -> None:
        self.context_len = context_len


class StandInTokenizerManager:
    def __init__(self, state: FakeSGLangState) -> None:
        self.state = state
        self.aborted: list[str] = []
        self._subprocess_watchdog = None
        self.model_config = StandInModelConfig(state.context_length)
        self.max_req_input_len = state.context_length - SCHEDULER_INPUT_MARGIN

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)
        event = self.state.in_flight.get(rid)
        if event is not None:
            event.set()


class StandInEngine:
    """Yields the same dicts as ``Engine.async_generate(stream=True)`` (reusing the fake server's loop)."""

    def __init__(self, state: FakeSGLangState, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.state = state
        self.tokenizer_manager = StandInTokenizerManager(state)
        self.child = subprocess.Popen(SLEEPER)  # stands for SGLang's scheduler process

    async def async_generate(self, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        body = {**kwargs, "stream": True}
        self.state.requests.append(body)
        return _Generation(self.state, body, len(kwargs["input_ids"])).chunks()

    def shutdown(self) -> None:
        raise AssertionError("shutdown() kills every child process; the backend must never call it")


@pytest.fixture
def state() -> FakeSGLangState:
    return FakeSGLangState(incremental=True)


@pytest.fixture
def outsider() -> Iterator[subprocess.Popen[bytes]]:
    """A child process of the server that is not SGLang's (e.g. a Token2Wav worker)."""
    proc = subprocess.Popen(SLEEPER)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
async def backend(state: FakeSGLangState, tiny_vocab: ModelVocab) -> AsyncIterator[SGLangEngineBackend]:
    engines: list[StandInEngine] = []

    def factory(**kwargs: Any) -> StandInEngine:
        engines.append(StandInEngine(state, **kwargs))
        return engines[-1]

    backend = SGLangEngineBackend(
        SGLangEngineConfig(model_path="/models/x"), engine_factory=factory, vocab=tiny_vocab
    )
    await backend.start()
    yield backend
    await backend.aclose()
    for engine in engines:
        engine.child.kill()
        engine.child.wait()


def request(rid: str = "resp_e-0") -> GenerationInput:
    return GenerationInput(rid=rid, turns=[PromptTurn(role="user", text="hi")])


async def test_streams_new_ids_with_the_engine_settings(
    backend: SGLangEngineBackend, state: FakeSGLangState
) -> None:
    state.script = lambda body: REPLY
    state.stream_interval = 2
    chunks = [chunk async for chunk in backend.generate(request())]
    assert [i for chunk in chunks for i in chunk.ids] == REPLY
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert backend.last_stream_mode is StreamMode.INCREMENTAL
    (call,) = state.requests
    assert call["rid"] == "resp_e-0"
    assert call["sampling_params"]["stop_token_ids"] == [EOT]
    assert call["sampling_params"]["skip_special_tokens"] is False
    engine = backend._engine
    assert isinstance(engine, StandInEngine)
    assert engine.kwargs == {
        "skip_tokenizer_init": True,
        "incremental_streaming_output": True,
        "model_path": "/models/x",
    }


async def test_closing_the_iterator_aborts_by_rid(
    backend: SGLangEngineBackend, state: FakeSGLangState
) -> None:
    state.script = lambda body: LONG_REPLY
    state.token_delay_s = 0.005
    stream = cast(AsyncGenerator[TokenChunk, None], backend.generate(request("resp_e-1")))
    await anext(stream)
    await stream.aclose()
    engine = backend._engine
    assert isinstance(engine, StandInEngine)
    assert engine.tokenizer_manager.aborted == ["resp_e-1"]


async def test_explicit_abort_finishes_with_abort(
    backend: SGLangEngineBackend, state: FakeSGLangState
) -> None:
    state.script = lambda body: LONG_REPLY
    state.token_delay_s = 0.005
    chunks: list[TokenChunk] = []
    async for chunk in backend.generate(request("resp_e-2")):
        chunks.append(chunk)
        if len(chunks) == 2:
            await backend.abort("resp_e-2")
    assert chunks[-1].finish_reason is FinishReason.ABORT


async def test_engine_value_error_is_a_backend_error(
    backend: SGLangEngineBackend, state: FakeSGLangState
) -> None:
    state.script = lambda body: LONG_REPLY
    state.token_delay_s = 0.005
    first = cast(AsyncGenerator[TokenChunk, None], backend.generate(request("resp_dup")))
    await anext(first)
    with pytest.raises(BackendError) as caught:
        async for _ in backend.generate(request("resp_dup")):
            pass
    await first.aclose()
    assert caught.value.code == "duplicate_request_id"
    assert "Duplicate request ID" in caught.value.message


async def test_aclose_terminates_only_the_engines_children(
    state: FakeSGLangState, tiny_vocab: ModelVocab, outsider: subprocess.Popen[bytes]
) -> None:
    engines: list[StandInEngine] = []

    def factory(**kwargs: Any) -> StandInEngine:
        engines.append(StandInEngine(state, **kwargs))
        return engines[-1]

    backend = SGLangEngineBackend(
        SGLangEngineConfig(model_path="/models/x"), engine_factory=factory, vocab=tiny_vocab
    )
    await backend.start()
    await backend.aclose()
    assert engines[0].child.wait(timeout=15) is not None  # SGLang's child is gone
    assert outsider.poll() is None  # ours survived (Engine.shutdown() would have killed it)


async def test_missing_sglang_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tiny_vocab: ModelVocab
) -> None:
    monkeypatch.setitem(sys.modules, "sglang.srt.entrypoints.engine", None)  # import now raises ImportError
    backend = SGLangEngineBackend(SGLangEngineConfig(model_path="/models/x"), vocab=tiny_vocab)
    with pytest.raises(BackendError) as caught:
        await backend.start()
    assert caught.value.code == "backend_unavailable"
    assert "streamvoice[sglang]" in caught.value.message


async def test_generate_before_start_is_a_backend_error(tiny_vocab: ModelVocab) -> None:
    backend = SGLangEngineBackend(SGLangEngineConfig(model_path="/models/x"), vocab=tiny_vocab)
    with pytest.raises(BackendError) as caught:
        async for _ in backend.generate(request()):
            pass
    assert caught.value.code == "not_started"


async def test_context_length_comes_from_the_engine(
    backend: SGLangEngineBackend, state: FakeSGLangState
) -> None:
    # model_config.context_len 4096, lowered to what the scheduler admits (max_req_input_len + 1)
    assert backend.context_length == state.context_length - SCHEDULER_INPUT_MARGIN + 1
    req = request("resp_ctx-0")
    chunks = [chunk async for chunk in backend.generate(req)]
    assert chunks[-1].finish_reason is not None
    (body,) = state.requests
    prompt = backend.count_prompt_tokens(req)
    assert body["sampling_params"]["max_new_tokens"] == backend.context_length - prompt
