"""SGLangHTTPBackend against the fake SGLang server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from realtime.backends.base import (
    BackendError,
    FinishReason,
    GenerationInput,
    PromptTurn,
    SamplingParams,
    TokenChunk,
)
from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig
from realtime.backends.sglang.stream import StreamMode
from realtime.backends.sglang.vocab import ModelVocab
from tests.support.fake_sglang import FakeSGLangServer
from tests.support.sglang_fixtures import fake_sglang, http_backend, tiny_model_dir, tiny_vocab

__all__ = ["fake_sglang", "http_backend", "tiny_model_dir", "tiny_vocab"]

EOT, TTS_END, AUDIO_0 = 151692, 151694, 151696
# A spoken reply in TA4 order: 1 text id, 4 audio ids, ..., <tts_end>, <|EOT|>, then ids past the stop.
REPLY = [6, *(AUDIO_0 + c for c in range(4)), 7, *(AUDIO_0 + c for c in range(4, 8)), TTS_END, EOT, 8, 8]
LONG_REPLY = [AUDIO_0 + (i % 6561) for i in range(5000)]
ABORT_LATENCY_S = 0.1  # the bound: cancel -> abort arrives at SGLang


def request(rid: str = "resp_1-0", **kwargs: object) -> GenerationInput:
    turns = kwargs.pop("turns", [PromptTurn(role="user", text="hi")])
    return GenerationInput(rid=rid, turns=turns, **kwargs)  # type: ignore[arg-type]


async def collect(backend: SGLangHTTPBackend, req: GenerationInput) -> list[TokenChunk]:
    return [chunk async for chunk in backend.generate(req)]


def ids_of(chunks: list[TokenChunk]) -> list[int]:
    return [i for chunk in chunks for i in chunk.ids]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------ start-up checks


async def test_start_reads_model_info(http_backend: SGLangHTTPBackend) -> None:
    assert http_backend.model_info["architectures"] == ["StepAudio2ForCausalLM"]
    assert http_backend.vocab.eot == EOT
    assert http_backend.text_codec.decode([6, 5, 7]) == "hi there"


async def test_start_falls_back_to_get_model_info(
    fake_sglang: FakeSGLangServer, tiny_vocab: ModelVocab
) -> None:
    fake_sglang.state.legacy_model_info_only = True
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url), vocab=tiny_vocab)
    await backend.start()
    await backend.aclose()
    assert backend.model_info["model_path"] == "/models/Step-Audio-2-mini"


async def test_start_connection_refused(tiny_model_dir: Path) -> None:
    backend = SGLangHTTPBackend(
        SGLangHTTPConfig(url=f"http://127.0.0.1:{free_port()}", model_dir=tiny_model_dir)
    )
    with pytest.raises(BackendError) as caught:
        await backend.start()
    await backend.aclose()
    assert caught.value.code == "connection_refused"
    assert "cannot connect to SGLang" in caught.value.message


async def test_start_wrong_model(fake_sglang: FakeSGLangServer, tiny_model_dir: Path) -> None:
    config = SGLangHTTPConfig(
        url=fake_sglang.url, model_dir=tiny_model_dir, expected_model="/models/Qwen2-7B"
    )
    backend = SGLangHTTPBackend(config)
    with pytest.raises(BackendError) as caught:
        await backend.start()
    await backend.aclose()
    assert caught.value.code == "wrong_model"
    assert "Step-Audio-2-mini" in caught.value.message


async def test_start_accepts_model_by_folder_name(
    fake_sglang: FakeSGLangServer, tiny_vocab: ModelVocab
) -> None:
    config = SGLangHTTPConfig(url=fake_sglang.url, expected_model="/srv/Step-Audio-2-mini/")
    backend = SGLangHTTPBackend(config, vocab=tiny_vocab)
    await backend.start()
    await backend.aclose()


async def test_start_needs_a_local_tokenizer(fake_sglang: FakeSGLangServer) -> None:
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url))
    with pytest.raises(BackendError) as caught:
        await backend.start()
    await backend.aclose()
    assert caught.value.code == "bad_model_dir"
    assert "--model-dir" in caught.value.message


async def test_start_uses_server_tokenizer_path_when_local(
    fake_sglang: FakeSGLangServer, tiny_model_dir: Path
) -> None:
    fake_sglang.state.model_info["tokenizer_path"] = str(tiny_model_dir)
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url))
    await backend.start()
    await backend.aclose()
    assert backend.vocab.bot == 151691


# ------------------------------------------------------------------------------------------- streaming


async def test_request_body_follows_the_spec(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    sampling = SamplingParams(max_new_tokens=321)
    chunks = await collect(http_backend, request("resp_body-0", sampling=sampling, instructions="Be brief."))
    (body,) = fake_sglang.state.requests
    assert body["rid"] == "resp_body-0"
    assert body["stream"] is True
    assert "audio_data" not in body and "text" not in body
    assert body["input_ids"][:8] == [151691, 1, 2, 9, 5, 10, 11, EOT]
    assert body["sampling_params"] == {
        "max_new_tokens": 321,
        "temperature": 0.7,
        "top_p": 0.9,
        "repetition_penalty": 1.05,
        "stop_token_ids": [EOT],
        "skip_special_tokens": False,
    }
    assert ids_of(chunks) == REPLY[: REPLY.index(EOT) + 1]  # the matched stop id is part of the output
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])
    assert chunks[-1].prompt_tokens == len(body["input_ids"])
    assert chunks[-1].completion_tokens == REPLY.index(EOT) + 1


@pytest.mark.parametrize("incremental", [False, True])
@pytest.mark.parametrize("interval", [1, 3, 64])
async def test_cumulative_and_incremental_give_the_same_new_ids(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend, incremental: bool, interval: int
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    fake_sglang.state.incremental = incremental
    fake_sglang.state.stream_interval = interval
    chunks = await collect(http_backend, request())
    assert ids_of(chunks) == REPLY[: REPLY.index(EOT) + 1]
    assert len(chunks) == -(-(REPLY.index(EOT) + 1) // interval)
    if interval < REPLY.index(EOT):  # two chunks or more tell the modes apart
        assert http_backend.last_stream_mode is (
            StreamMode.INCREMENTAL if incremental else StreamMode.CUMULATIVE
        )


async def test_length_finish(fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    chunks = await collect(http_backend, request(sampling=SamplingParams(max_new_tokens=7)))
    assert ids_of(chunks) == LONG_REPLY[:7]
    assert chunks[-1].finish_reason is FinishReason.LENGTH


async def test_audio_input_is_sent_and_checked(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    speech = (np.sin(np.arange(36_000) / 7.0) * 2000).astype("<i2").tobytes()  # 1.5 s at 24 kHz
    chunks = await collect(http_backend, request(turns=[PromptTurn(role="user", audio_pcm16=speech)]))
    (body,) = fake_sglang.state.requests
    assert len(body["audio_data"]) == 1 and body["audio_data"][0].startswith("data:audio/wav;base64,")
    # 24000 samples at 16 kHz -> 19 patches: prompt_tokens = sent ids + 18
    assert chunks[-1].prompt_tokens == len(body["input_ids"]) + 18


async def test_silently_dropped_audio_fails_clearly(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 0.01
    fake_sglang.state.audio_mode = "drop"  # upstream SGLang without the Step-Audio-2 processor
    speech = np.zeros(24_000, dtype="<i2").tobytes()
    with pytest.raises(BackendError) as caught:
        await collect(
            http_backend, request("resp_drop-0", turns=[PromptTurn(role="user", audio_pcm16=speech)])
        )
    assert caught.value.code == "audio_dropped"
    assert "ignored the 1 audio block" in caught.value.message
    await asyncio.sleep(0.2)
    assert [rid for rid, _ in fake_sglang.state.aborts] == ["resp_drop-0"]  # the GPU was stopped


async def test_audio_understanding_flag_is_not_trusted(
    fake_sglang: FakeSGLangServer, tiny_vocab: ModelVocab
) -> None:
    # SGLang 0.5.23 reports has_audio_understanding False for a plugin model whose config has no
    # ``audio_config`` attribute, yet expands its audio: the prompt length decides, not the flag.
    fake_sglang.state.model_info["has_audio_understanding"] = False
    fake_sglang.state.script = lambda body: REPLY
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url), vocab=tiny_vocab)
    await backend.start()
    speech = np.zeros(2_400, dtype="<i2").tobytes()
    chunks = await collect(backend, request(turns=[PromptTurn(role="user", audio_pcm16=speech)]))
    await backend.aclose()
    assert chunks[-1].finish_reason is FinishReason.STOP


# --------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("fault", "code", "text"),
    [
        ("http_500", "http_500", "injected internal error"),
        ("error_chunk", "server_error", "injected error chunk"),
        ("cut", "stream_cut", "broke after 2 ids"),
        ("no_finish", "stream_cut", "without a finish reason"),
        ("server_abort", "aborted_by_server", "injected server abort"),
    ],
)
async def test_faults_become_backend_errors_and_the_backend_recovers(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend, fault: str, code: str, text: str
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    fake_sglang.state.fault = fault  # type: ignore[assignment]
    fake_sglang.state.fault_after = 2
    received: list[int] = []
    with pytest.raises(BackendError) as caught:
        async for chunk in http_backend.generate(request("resp_fault-0")):
            received.extend(chunk.ids)
    assert caught.value.code == code
    assert text in caught.value.message
    assert received == ([] if fault == "http_500" else REPLY[:2])
    await asyncio.sleep(0.1)
    if fault in ("http_500", "server_abort"):  # never started, or already ended by the server
        assert fake_sglang.state.aborts == []
    elif fault in ("error_chunk", "cut"):
        assert [rid for rid, _ in fake_sglang.state.aborts] == ["resp_fault-0"]
    fake_sglang.state.fault = "none"
    chunks = await collect(http_backend, request("resp_fault-1"))
    assert chunks[-1].finish_reason is FinishReason.STOP


async def test_read_timeout(fake_sglang: FakeSGLangServer, tiny_vocab: ModelVocab) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 5.0
    config = SGLangHTTPConfig(url=fake_sglang.url, read_timeout_s=0.2)
    backend = SGLangHTTPBackend(config, vocab=tiny_vocab)
    await backend.start()
    with pytest.raises(BackendError) as caught:
        await collect(backend, request("resp_slow-0"))
    await backend.aclose()  # waits for the background abort
    assert caught.value.code == "timeout"
    assert [rid for rid, _ in fake_sglang.state.aborts] == ["resp_slow-0"]


async def test_duplicate_rid_in_flight_has_its_own_code(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 0.02
    first = cast(AsyncGenerator[TokenChunk, None], http_backend.generate(request("resp_dup-0")))
    await anext(first)
    with pytest.raises(BackendError) as caught:
        await collect(http_backend, request("resp_dup-0"))
    await first.aclose()
    assert caught.value.code == "duplicate_request_id"
    assert "Duplicate request ID" in caught.value.message


# ----------------------------------------------------------------------------------------- cancellation


async def test_closing_the_stream_aborts_within_100_ms(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 0.01
    stream = cast(AsyncGenerator[TokenChunk, None], http_backend.generate(request("resp_cancel-0")))
    await anext(stream)
    cancelled_at = time.monotonic()
    await stream.aclose()
    await asyncio.sleep(0.3)
    ((rid, arrived_at),) = fake_sglang.state.aborts
    assert rid == "resp_cancel-0"
    assert arrived_at - cancelled_at < ABORT_LATENCY_S
    assert [rid for rid, _ in fake_sglang.state.disconnects] == ["resp_cancel-0"]  # the stream was closed too


async def test_cancelling_the_consumer_task_aborts_within_100_ms(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 0.01
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in http_backend.generate(request("resp_task-0")):
            first_chunk.set()

    task = asyncio.create_task(consume())
    await first_chunk.wait()
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    ((rid, arrived_at),) = fake_sglang.state.aborts
    assert rid == "resp_task-0"
    assert arrived_at - cancelled_at < ABORT_LATENCY_S


async def test_explicit_abort_ends_the_stream_with_abort(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: LONG_REPLY
    fake_sglang.state.token_delay_s = 0.01
    chunks: list[TokenChunk] = []
    async for chunk in http_backend.generate(request("resp_abort-0")):
        chunks.append(chunk)
        if len(chunks) == 3:
            await http_backend.abort("resp_abort-0")
    assert chunks[-1].finish_reason is FinishReason.ABORT
    assert len(ids_of(chunks)) < len(LONG_REPLY)
    assert [rid for rid, _ in fake_sglang.state.aborts] == ["resp_abort-0"]


async def test_finished_generation_sends_no_abort(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    await collect(http_backend, request())
    await asyncio.sleep(0.1)
    assert fake_sglang.state.aborts == []


async def test_abort_never_raises(tiny_model_dir: Path) -> None:
    backend = SGLangHTTPBackend(
        SGLangHTTPConfig(url=f"http://127.0.0.1:{free_port()}", model_dir=tiny_model_dir)
    )
    await backend.abort("nobody")  # connection refused: logged, not raised
    await backend.aclose()


async def test_sequential_requests_reuse_one_connection(
    fake_sglang: FakeSGLangServer, http_backend: SGLangHTTPBackend
) -> None:
    fake_sglang.state.script = lambda body: REPLY
    for n in range(3):
        await collect(http_backend, request(f"resp_reuse-{n}"))
    ports = fake_sglang.state.client_ports
    assert len(ports) == 3 and len(set(ports)) == 1
