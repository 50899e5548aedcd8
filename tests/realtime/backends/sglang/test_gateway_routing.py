"""The HTTP backend past an SGLang Model Gateway, against a scripted gateway (an httpx mock transport with
smg's observable behaviour) and two fake SGLang workers that record the aborts reaching them.

smg's behaviour scripted here, as read from smg 1.13 and checked against a real one in
``tests/step_audio2_sglang/test_gateway.py``: ``/model_info`` is 404 and ``/get_model_info`` is proxied;
``/abort_request`` is 404; ``GET /workers`` lists ``{"workers": [{"url": ...}]}``; a streamed ``/generate``
carries ``x-smg-routed-worker-id: <worker url>``; a worker that dies mid-stream shows up as one
``{"error": {"message": "Stream error: ..."}}`` chunk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.backends.base import BackendError, GenerationInput, PromptTurn, SamplingParams
from realtime.backends.sglang.abort import AbortRoute
from realtime.backends.sglang.http import PROBE_CACHE_S, SGLangHTTPBackend, SGLangHTTPConfig
from realtime.backends.sglang.vocab import ModelVocab
from tests.support.fake_sglang import FakeSGLangServer
from tests.support.sglang_fixtures import fake_sglang, tiny_model_dir, tiny_vocab

__all__ = ["fake_sglang", "tiny_model_dir", "tiny_vocab"]

GATEWAY = "http://gateway.test"
PROMPT_TOKENS = 40
CACHED_TOKENS = 32


class ScriptedGateway:
    """What the backend sees of smg; ``workers`` are real fake-SGLang URLs (aborts go there directly)."""

    def __init__(self, workers: list[str], routed: str | None) -> None:
        self.workers = workers
        self.routed = routed
        self.workers_status = 200
        self.readiness_status = 200
        self.stream_error: str | None = None
        self.generate_headers: list[httpx.Headers] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/get_model_info":
            return httpx.Response(
                200, json={"model_path": "/models/Step-Audio-2-mini", "is_generation": True}
            )
        if path == "/readiness":
            return httpx.Response(
                self.readiness_status,
                json={"status": "ready" if self.readiness_status == 200 else "not ready"},
            )
        if path == "/workers" and request.method == "GET":
            body = {"workers": [{"id": str(i), "url": url} for i, url in enumerate(self.workers)]}
            return httpx.Response(self.workers_status, json=body if self.workers_status == 200 else {})
        if path == "/generate":
            self.generate_headers.append(request.headers)
            rid = json.loads(request.content)["rid"]
            headers = {"content-type": "text/event-stream"}
            if self.routed:
                headers["x-smg-routed-worker-id"] = self.routed
            return httpx.Response(200, headers=headers, content=self._sse(rid))
        return httpx.Response(
            404, json={"error": {"code": "unknown_url", "message": f"Invalid URL ({path})"}}
        )

    def _sse(self, rid: str) -> bytes:
        meta = {"id": rid, "prompt_tokens": PROMPT_TOKENS, "cached_tokens": CACHED_TOKENS}
        first = {"output_ids": [5, 6], "meta_info": {**meta, "completion_tokens": 2, "finish_reason": None}}
        lines = [first]
        if self.stream_error:
            lines.append({"error": {"message": self.stream_error}})
        else:
            last = {"type": "length", "length": 3}
            lines.append(
                {
                    "output_ids": [5, 6, 7],
                    "meta_info": {**meta, "completion_tokens": 3, "finish_reason": last},
                }
            )
        body = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
        return body.encode()


@pytest.fixture
def workers() -> Iterator[list[FakeSGLangServer]]:
    with FakeSGLangServer() as first, FakeSGLangServer() as second:
        yield [first, second]


def _backend(gateway: ScriptedGateway, vocab: ModelVocab, **config: Any) -> SGLangHTTPBackend:
    return SGLangHTTPBackend(
        SGLangHTTPConfig(url=GATEWAY, **config), vocab=vocab, transport=httpx.MockTransport(gateway.handle)
    )


def _request(rid: str, key: str = "conv_1") -> GenerationInput:
    return GenerationInput(
        rid=rid,
        turns=[PromptTurn("user", text="hi")],
        sampling=SamplingParams(max_new_tokens=3),
        affinity_key=key,
    )


def _aborted(worker: FakeSGLangServer) -> list[str]:
    return [rid for rid, _ in worker.state.aborts]


async def test_start_finds_the_gateway_and_its_workers(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    backend = _backend(ScriptedGateway([w.url for w in workers], routed=None), tiny_vocab)
    await backend.start()
    await backend.aclose()
    assert backend.model_info["model_path"] == "/models/Step-Audio-2-mini"  # via /get_model_info
    assert backend.abort_route is AbortRoute.WORKERS


async def test_generate_sends_the_affinity_key_and_reports_cached_tokens(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    gateway = ScriptedGateway([w.url for w in workers], routed=workers[1].url)
    backend = _backend(gateway, tiny_vocab)
    await backend.start()
    chunks = [chunk async for chunk in backend.generate(_request("resp_a-0", key="conv_abc"))]
    await backend.aclose()
    assert gateway.generate_headers[0]["x-smg-routing-key"] == "conv_abc"
    assert [chunk.cached_tokens for chunk in chunks] == [CACHED_TOKENS, CACHED_TOKENS]
    assert _aborted(workers[0]) == _aborted(workers[1]) == []  # it finished: nothing to abort


async def test_no_affinity_header_when_switched_off(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    gateway = ScriptedGateway([w.url for w in workers], routed=None)
    backend = _backend(gateway, tiny_vocab, affinity_header="")
    await backend.start()
    _ = [chunk async for chunk in backend.generate(_request("resp_b-0"))]
    await backend.aclose()
    assert "x-smg-routing-key" not in gateway.generate_headers[0]


async def test_closing_the_stream_aborts_on_the_routed_worker_only(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    backend = _backend(ScriptedGateway([w.url for w in workers], routed=workers[1].url), tiny_vocab)
    await backend.start()
    stream = backend.generate(_request("resp_c-0"))
    await anext(stream)
    await stream.aclose()  # a cancel mid-reply
    await backend.aclose()  # waits for the background abort
    assert _aborted(workers[1]) == ["resp_c-0"]
    assert _aborted(workers[0]) == []


async def test_without_a_routed_worker_the_abort_goes_to_every_worker(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    backend = _backend(ScriptedGateway([w.url for w in workers], routed=None), tiny_vocab)
    await backend.start()
    stream = backend.generate(_request("resp_d-0"))
    await anext(stream)
    await stream.aclose()
    await backend.abort("resp_d-0")  # the pipeline's cleanup abort after the stream is gone: not resent
    await backend.aclose()
    assert _aborted(workers[0]) == _aborted(workers[1]) == ["resp_d-0"]


async def test_configured_worker_urls_serve_when_the_gateway_hides_its_list(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    gateway = ScriptedGateway([], routed=None)
    gateway.workers_status = 401  # a control plane behind keys
    backend = _backend(gateway, tiny_vocab, worker_urls=(workers[0].url,))
    await backend.start()
    assert backend.abort_route is AbortRoute.DIRECT  # not recognisable as a gateway ...
    stream = backend.generate(_request("resp_e-0"))
    await anext(stream)
    await stream.aclose()
    await backend.aclose()
    assert backend.abort_route is AbortRoute.WORKERS  # ... until /abort_request answered 404
    assert _aborted(workers[0]) == ["resp_e-0"]
    assert _aborted(workers[1]) == []


async def test_a_worker_dying_behind_the_gateway_is_a_stream_cut(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    gateway = ScriptedGateway([w.url for w in workers], routed=workers[0].url)
    gateway.stream_error = "Stream error: error decoding response body: unexpected EOF during chunk size line"
    backend = _backend(gateway, tiny_vocab)
    await backend.start()
    with pytest.raises(BackendError) as caught:
        _ = [chunk async for chunk in backend.generate(_request("resp_f-0"))]
    await backend.aclose()
    assert caught.value.code == "stream_cut"
    assert "worker's stream broke mid-response" in caught.value.message


async def test_readiness_follows_the_gateways_readiness(
    workers: list[FakeSGLangServer], tiny_vocab: ModelVocab
) -> None:
    gateway = ScriptedGateway([w.url for w in workers], routed=None)
    backend = _backend(gateway, tiny_vocab)
    await backend.start()
    await backend.check_reachable()  # no worker down: ready
    gateway.readiness_status = 503
    await asyncio.sleep(PROBE_CACHE_S)  # past the cached answer
    with pytest.raises(BackendError) as caught:
        await backend.check_reachable()
    await backend.aclose()
    assert caught.value.code == "http_503"


async def test_readiness_of_plain_sglang_is_its_health(
    fake_sglang: FakeSGLangServer, tiny_vocab: ModelVocab
) -> None:
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url), vocab=tiny_vocab)
    await backend.start()
    assert backend.abort_route is AbortRoute.DIRECT
    await backend.check_reachable()
    await backend.aclose()
