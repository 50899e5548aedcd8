"""One reply's speech stream: driven from the event loop, executed on the inference worker.

`ReplyDecoder` turns batches of audio codes into `AudioChunk`s by submitting decode steps to the worker's
scheduler under the reply's `JobGroup` (so a cancel drops its queued steps). Each step carries the reply's
deadline: the moment its client runs out of the audio sent so far (`perf_counter` at the first decoded chunk
plus the audio duration since), or, before any audio, the submission time with first-audio priority. A
speech segment that ends (``<tts_end>``) is finished; a later segment opens a new engine stream.

On a loaded decoder (`SpeechSetup.hold_load`), a reply's first chunk is held back until its second is decoded:
the first chunk is short (~0.24 s) and the next one's codes arrive only just in time, so with the decoder busy
the listener would run dry between them (issue 27: the stalls left after admission all fell there). Held, the
listener starts with both (~0.84 s) and a later first audio.

A reply with little audio ahead of its listener (its first chunks, or under `EXPOSED_AHEAD_S`) registers its
deadline with the worker (`InferenceWorker.ramping`) until its next step is queued, so no batch outlasts it.
Right after the held pair its listener has ~0.84 s, and the third chunk's codes are still on their way: as an
ordinary steady step it waited for a running batch and then ran in a full one, and its listener ran dry
(issue 27: every stall left with the hold fell at 0.84 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from realtime.audio import PCM_RATE, int16_to_pcm16
from realtime.errors import ResponseFailure, SpeechError
from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission
from realtime.speech.engine import EngineVoice, SpeechEngine, StepRequest
from realtime.speech.reply import AudioChunk
from realtime.speech.worker import InferenceWorker, JobGroup, WorkerClosed

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")
# A reply is in its first chunks until this much audio is decoded (its first two chunks): the first is short
# (~0.25 s) and the LLM delivers the second one's codes only just in time (80 tokens/s: ~0.25 s later), so no
# batch may outlast its listener's slack (`InferenceWorker.ramping`) and far-ahead replies make room for it.
STARTING_AUDIO_S = 0.8
# A reply with less audio than this ahead of its listener bounds every batch until its next step is queued: that
# step may wait for a running batch and then run in one (each up to `DEFAULT_BATCH_SECONDS`, 0.4 s) after its
# codes arrive (a 23-code hop takes ~0.36 s at 80 LLM tokens/s), 1.16 s in all.
EXPOSED_AHEAD_S = 1.2
PACE_AHEAD_S = 1.0  # audio ahead of its listener that a reply keeps while others start (`_yield_to_starters`)
PACE_POLL_S = 0.05


@dataclass(frozen=True)
class SpeechSetup:
    """The speech side of one reply.

    Attributes:
        worker: the inference worker that owns the engine.
        voice: the primed voice (`SpeechEngine.load_voice` result).
        sample_rate: PCM rate of the engine's output.
        admission: the decoder's admission gate, whose load decides whether a first chunk is held.
        hold_load: hold a reply's first chunk while the answers speaking reach this share of the decoder's
            capacity in audio seconds per second (0: never; `ServerConfig.first_chunk_hold_load`).
    """

    worker: InferenceWorker[SpeechEngine]
    voice: EngineVoice
    sample_rate: int = PCM_RATE
    admission: DecoderAdmission | None = None
    hold_load: float = 0.0

    def decoder_loaded(self) -> bool:
        """Answers wait in line for the decoder, or those speaking reach `hold_load` of what it serves at that
        load (module doc). Answers that start together are counted one by one as the first of them decodes, so
        the line tells first that the decoder is full."""
        gate = self.admission
        if gate is None or self.hold_load <= 0.0 or gate.live < 2:
            return False
        if gate.saturated:
            return True
        capacity = gate.capacity_now()
        return capacity is not None and gate.live >= self.hold_load * capacity


class ReplyDecoder:
    """One reply's engine stream. Event loop only; every engine call runs on the worker."""

    def __init__(self, speech: SpeechSetup, group: JobGroup | None, metrics: Metrics) -> None:
        self._speech = speech
        self._group = group
        self._metrics = metrics
        self._stream: object | None = None
        self._audio_start: float | None = None  # perf_counter when the reply's first audio was decoded
        self._audio_seconds = 0.0  # audio decoded so far
        self._awaiting_first = False  # counted in the worker's `starting` (open, no audio yet)
        self._hold_decided = False  # whether to hold the first chunk is decided once, when it is decoded
        self._held: list[bytes] = []  # a first chunk held until the second (module docstring)

    @property
    def _starting(self) -> bool:
        """In its first chunks: no audio yet, or less than `STARTING_AUDIO_S` of it."""
        return self._audio_seconds < STARTING_AUDIO_S

    async def open(self) -> None:
        """Start the engine stream (the voice state is cloned while the LLM is still prefilling)."""
        if self._stream is None:
            voice = self._speech.voice
            self._stream = await self._run(lambda engine: engine.start(voice))
            if self._audio_start is None and not self._awaiting_first:
                self._awaiting_first = True  # the scheduler keeps steady batches short until our first chunk
                self._speech.worker.first_chunk_expected(1)

    def close(self) -> None:
        """The reply is over (finished, failed or cancelled): the scheduler no longer waits for it."""
        self._first_arrived()
        if self._stream is not None:
            self._speech.worker.ramping(id(self._stream), None)

    def _first_arrived(self) -> None:
        if self._awaiting_first:
            self._awaiting_first = False
            self._speech.worker.first_chunk_expected(-1)

    async def push(self, codes: list[int]) -> list[AudioChunk]:
        """Decode ``codes``; return the chunks that became ready."""
        await self.open()
        stream = self._stream
        assert stream is not None
        return await self._step(StepRequest(stream, tuple(codes)))

    async def finish(self) -> list[AudioChunk]:
        """Flush the stream (end of the speech segment); a later segment opens a new stream."""
        if self._stream is None:
            return []
        stream, self._stream = self._stream, None
        self._speech.worker.ramping(id(stream), None)
        return await self._step(StepRequest(stream, finish=True))

    @property
    def deadline(self) -> float | None:
        """`perf_counter` at which the client will have played all audio decoded so far (None: no audio yet)."""
        if self._audio_start is None:
            return None
        return self._audio_start + self._audio_seconds

    async def _yield_to_starters(self) -> None:
        """While other replies start or have little audio ahead, a reply far ahead of its listener waits.

        Its steps would be the last in deadline order anyway, but batches are not preemptive: a batch of
        far-ahead steps that runs when a starting reply's next codes arrive makes that listener run dry. Only
        while someone starts or is exposed (`EXPOSED_AHEAD_S`), and never below `PACE_AHEAD_S` of audio ahead,
        so a reply alone runs at full speed. (Pacing only for replies in their first chunks brought stalls back:
        5 responses in two runs of 16 x 3, none with this rule in the same runs.)
        """
        worker = self._speech.worker
        own = None if self._stream is None else id(self._stream)
        while not self._starting and (worker.starting > 0 or worker.ramping_besides(own) > 0):
            deadline = self.deadline
            ahead = 0.0 if deadline is None else deadline - time.perf_counter()
            if ahead <= PACE_AHEAD_S:
                return
            await asyncio.sleep(min(ahead - PACE_AHEAD_S, PACE_POLL_S))

    async def _step(self, request: StepRequest) -> list[AudioChunk]:
        await self._yield_to_starters()
        submitted = time.perf_counter()
        deadline = self.deadline
        try:
            chunks, started_at, ready_at = await self._speech.worker.run_step(
                request,
                deadline=submitted if deadline is None else deadline,
                has_audio=deadline is not None,
                group=self._group,
            )
        except WorkerClosed as exc:
            raise SpeechError("worker_closed", "The speech decoder is not running.") from exc
        except (asyncio.CancelledError, ResponseFailure):
            raise
        except Exception as exc:
            logger.exception("speech engine step failed")
            raise SpeechError("speech_failed", f"Speech decoding failed: {type(exc).__name__}.") from exc
        pcm = [int16_to_pcm16(chunk) for chunk in chunks if len(chunk)]
        decoded_s = sum(len(p) for p in pcm) // 2 / self._speech.sample_rate
        if pcm and self._audio_start is None and not self._hold_decided:
            self._hold_decided = True
            # a first step that already decoded more than the first chunk has what holding would buy
            if not request.finish and decoded_s < STARTING_AUDIO_S and self._speech.decoder_loaded():
                self._held, pcm = pcm, []  # the listener starts with this and the next chunk together
                self._metrics.first_chunk_held()
        elif self._held and (pcm or request.finish):
            pcm, self._held = self._held + pcm, []
        seconds = sum(len(p) for p in pcm) // 2 / self._speech.sample_rate
        if pcm and self._audio_start is None:
            self._audio_start = ready_at
            self._first_arrived()
        self._audio_seconds += seconds
        dry_at = self.deadline
        if self._stream is not None and request.stream is self._stream:
            # with little audio ahead, its listener's deadline bounds every batch until its next step is queued
            # (a reply in its first chunks always is: it has under STARTING_AUDIO_S decoded, so less ahead)
            exposed = dry_at is not None and dry_at - time.perf_counter() < EXPOSED_AHEAD_S
            self._speech.worker.ramping(id(self._stream), dry_at if exposed else None)
        # The batch's wall time: shared by every stream decoded in it (queueing before it is not counted).
        self._metrics.observe_decode(ready_at - started_at, decoded_s)
        return [AudioChunk(p, decoded_at=ready_at) for p in pcm]

    async def _run(self, fn: Callable[[SpeechEngine], ResultT]) -> ResultT:
        result, _ = await self._run_timed(fn)
        return result

    async def _run_timed(self, fn: Callable[[SpeechEngine], ResultT]) -> tuple[ResultT, float]:
        try:
            return await self._speech.worker.run_timed(fn, group=self._group)
        except WorkerClosed as exc:
            raise SpeechError("worker_closed", "The speech decoder is not running.") from exc
        except (asyncio.CancelledError, ResponseFailure):
            raise
        except Exception as exc:
            logger.exception("speech engine step failed")
            raise SpeechError("speech_failed", f"Speech decoding failed: {type(exc).__name__}.") from exc
