"""In-process sessions for tests: a light `Runtime`, scripted replies, and `serve_connection` over a fake transport.

No server, no socket: `running` runs the session core (realtime/session/connection.py) as a task over a
`FakeTransport` (tests/support/fake_transport.py), on a runtime whose decoder is the schedule double
(tests/support/speech_double.py) and whose LLM is the synthetic backend. `Script` replaces the runtime's reply
producer with a scripted one, so a test decides exactly when each transcript piece and audio chunk appears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from realtime.backends.base import FinishReason, GenerationInput, LLMBackend
from realtime.backends.synthetic import SyntheticBackend
from realtime.config import ServerConfig
from realtime.metrics import Metrics
from realtime.session.connection import Drain, serve_connection
from realtime.session.session import Session
from realtime.session.transport import Ending
from realtime.speech.reply import (
    AudioChunk,
    GenerationDone,
    PipelineEvent,
    TranscriptDelta,
    Usage,
    UsageMeter,
)
from realtime.speech.runtime import Runtime
from realtime.speech.voices import VoiceRegistry
from realtime.speech.worker import InferenceWorker
from realtime.wire.handshake import Dialect
from realtime.wire.session_config import SessionType
from tests.support.fake_transport import FakeTransport
from tests.support.server_harness import RuntimeView
from tests.support.speech_double import ScheduleDecoder

PCM_RATE = 24_000
FAST_TOKENS_PER_SECOND = 50_000.0
SESSION_GUARD_S = 30.0  # only a hang guard
USER_TEXT = {  # a user text item, as a client creates it
    "type": "conversation.item.create",
    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me"}]},
}


def tone_ms(ms: int) -> bytes:
    """``ms`` milliseconds of a non-silent 24 kHz PCM16 level (what a decoder chunk looks like to the wire)."""
    return b"\x10\x02" * (PCM_RATE * ms // 1000)


@asynccontextmanager
async def light_runtime(backend: LLMBackend | None = None, **config: Any) -> AsyncIterator[Runtime]:
    """A started runtime: the schedule double as decoder, the synthetic backend (or ``backend``) as LLM."""
    decoder = ScheduleDecoder()
    worker: InferenceWorker[Any] = InferenceWorker(lambda: decoder)
    await worker.start()
    voices: VoiceRegistry[Any] = VoiceRegistry.from_specs([])
    llm = backend or SyntheticBackend(tokens_per_second=FAST_TOKENS_PER_SECOND, prefill_seconds=0)
    runtime = Runtime(ServerConfig(**config), llm, worker, voices, Metrics(), decoder="test double")
    try:
        await runtime.load_voices()
        await runtime.warm_up()
        yield runtime
    finally:
        await runtime.aclose()


Step = PipelineEvent | asyncio.Event


class Script:
    """A reply producer whose replies play scripted steps: events are yielded, an `asyncio.Event` is waited for
    (a gate the test opens); a reply ends with `GenerationDone` unless it was cancelled.

    Args:
        replies: the steps of the first reply, the second, ...; the last one is played again after that.

    Attributes:
        requests: every request it was asked for.
        log: shared order of what happened (``"reply <rid>"``, ``"output <rid>"``), for ordering checks.
    """

    def __init__(self, *replies: Sequence[Step]) -> None:
        self._replies = replies
        self.requests: list[GenerationInput] = []
        self.log: list[str] = []

    def __call__(
        self, request: GenerationInput, *, voice: str, meter: UsageMeter | None = None
    ) -> AsyncIterator[PipelineEvent]:
        steps = self._replies[min(len(self.requests), len(self._replies) - 1)]
        self.requests.append(request)
        self.log.append(f"reply {request.rid}")
        return self._play(request.rid, steps)

    async def _play(self, rid: str, steps: Sequence[Step]) -> AsyncIterator[PipelineEvent]:
        first = True
        for step in steps:
            if isinstance(step, asyncio.Event):
                await step.wait()
                continue
            if first:
                self.log.append(f"output {rid}")
                first = False
            yield step
        yield GenerationDone(FinishReason.STOP, (), Usage(1, 1, 0.0))


def spoken(*pieces: str | int | asyncio.Event) -> list[Step]:
    """Script steps: a string is a transcript piece, an int that many ms of audio, an Event a gate."""
    steps: list[Step] = []
    for piece in pieces:
        if isinstance(piece, str):
            steps.append(TranscriptDelta(piece))
        elif isinstance(piece, int):
            steps.append(AudioChunk(tone_ms(piece)))
        else:
            steps.append(piece)
    return steps


def scripted(runtime: Runtime, script: Script, **config: Any) -> Runtime:
    """``runtime`` with ``script`` as its reply producer and ``config`` changes."""
    return RuntimeView(runtime, reply=script, **config)


@asynccontextmanager
async def running(
    runtime: Runtime,
    transport: FakeTransport,
    *,
    dialect: Dialect = Dialect.GA,
    drain: Drain | None = None,
    session_type: SessionType = "realtime",
) -> AsyncIterator[tuple[Session, asyncio.Task[Ending]]]:
    """Serve one session over ``transport``; on exit the client leaves and the connection is awaited."""
    session = Session(runtime, dialect, "test-model", session_type)
    task = asyncio.create_task(serve_connection(session, transport, drain), name="connection")
    try:
        yield session, task
    finally:
        if not task.done():
            await transport.leave()
        async with asyncio.timeout(SESSION_GUARD_S):
            await asyncio.gather(task, return_exceptions=True)
