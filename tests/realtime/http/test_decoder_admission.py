"""HTTP speech and chat audio pass the same decoder admission as Realtime responses; readiness reports a
saturated decoder (503 with the reason while answers wait for it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from realtime.http.app import create_app
from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission
from tests.support.server_harness import RuntimeView, ServerHandle

SPEECH = ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "pcm"})
CHAT_AUDIO = (
    "/v1/chat/completions",
    {
        "model": "gpt-4o-audio-preview",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "pcm16"},
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 40,
    },
)
DOORS = {"speech": SPEECH, "chat_audio": CHAT_AUDIO}


class Replica:
    """The test server's runtime behind an in-process app with its own one-stream decoder gate and metrics."""

    def __init__(self, server: ServerHandle, wait_s: float) -> None:
        assert server.runtime is not None
        self.view = RuntimeView(server.runtime, decoder_wait_seconds=wait_s)
        self.view.metrics = Metrics()
        self.gate = DecoderAdmission(1, metrics=self.view.metrics)
        self.view.decoder_streams = self.gate
        self.app = create_app(self.view, web_demo_dir=None)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.view.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(replica: Replica) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=replica.app), base_url="http://replica", timeout=60
        )
        clients.append(made)
        return made

    yield make
    for made in clients:
        await made.aclose()


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_full_decoder_refuses_with_decoder_capacity_reached(
    server: ServerHandle, client: Any, door: str
) -> None:
    replica = Replica(server, wait_s=0.1)
    assert await replica.gate.acquire(0.0)  # a Realtime response speaks on the only stream
    path, body = DOORS[door]
    answer = await client(replica).post(path, json=body)
    assert answer.status_code == 503, answer.text
    assert answer.json() == {
        "error": {
            "message": answer.json()["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "decoder_capacity_reached",
        }
    }
    assert "capacity" in answer.json()["error"]["message"]
    assert answer.headers["retry-after"] == "1"  # the openai SDKs retry a 503 after it
    assert replica.gate.refused == 1 and replica.gate.live == 1
    assert replica.metric("streamvoice_decoder_refusals_total") == 1
    assert replica.metric("streamvoice_errors_total", {"code": "decoder_capacity_reached"}) == 1
    replica.gate.release()


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_queued_answer_makes_the_replica_not_ready_then_speaks_when_room_comes(
    server: ServerHandle, client: Any, door: str
) -> None:
    replica = Replica(server, wait_s=10.0)
    http = client(replica)
    assert await replica.gate.acquire(0.0)
    path, body = DOORS[door]
    queued = asyncio.create_task(http.post(path, json=body))
    for _ in range(200):
        if replica.gate.waiting:
            break
        await asyncio.sleep(0.01)
    assert replica.gate.waiting == 1
    assert replica.metric("streamvoice_admission_waiting", {"resource": "decoder"}) == 1
    ready = await http.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["decoder: saturated (1 answers speaking, 1 waiting for the decoder)"]
    health = (await http.get("/health")).json()
    assert health["ready"] == "not_ready" and health["decoder_streams"]["waiting"] == 1
    replica.gate.release()  # the Realtime response ends: the HTTP answer takes its stream
    answer = await asyncio.wait_for(queued, 60)
    assert answer.status_code == 200, answer.text
    assert len(answer.content) > 0
    assert replica.gate.live == 0 and replica.gate.admitted == 2  # given back at the end
    assert replica.metric("streamvoice_decoder_queue_seconds_count") == 2
    assert (await http.get("/health/ready")).status_code == 200


async def test_text_only_chat_needs_no_decoder(server: ServerHandle, client: Any) -> None:
    replica = Replica(server, wait_s=0.1)
    assert await replica.gate.acquire(0.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 8}
    answer = await client(replica).post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert replica.gate.refused == 0
    replica.gate.release()
