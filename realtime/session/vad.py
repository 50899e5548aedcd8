"""Server VAD: silero-vad speech probabilities turned into speech start/stop events, off the event loop.

One ONNX session (silero-vad's packaged ``silero_vad.onnx``) is shared by every connection: onnxruntime's
``run`` is thread-safe and the model is stateless apart from the recurrent state and 64-sample context that we
pass in and out, which each `TurnDetector` owns. All inference runs on one dedicated thread (`VadEngine`);
sessions await it, one slice of at most `SLICE_MS` at a time, so one huge append queues behind other sessions'
slices instead of holding the thread for its whole length. ``semantic_vad`` uses the same detector with the
longer silence window of its eagerness.

The engine is process-wide (`SharedEngine`): a server holds it from start-up (realtime/http/app.py's lifespan:
loaded and warmed up off the event loop, so the first session does not pay for it) to shutdown (the last
server to stop closes its thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from realtime.audio import AudioFormat, pcm16_to_float, resample, wire_to_pcm16
from realtime.wire.session_config import TurnDetection

log = logging.getLogger(__name__)

VAD_RATE = 16_000
WINDOW = 512  # samples per silero-vad step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window silero-vad expects in front of each step
STATE_SHAPE = (2, 1, 128)
HYSTERESIS = 0.15  # speech ends when the probability drops below threshold - 0.15 (silero's VADIterator)
MS_PER_SECOND = 1000
SLICE_MS = 1000  # audio per VAD job: ~31 windows, a few ms of CPU
_MODEL_PACKAGE = "silero_vad"
_MODEL_FILE = ("data", "silero_vad.onnx")


@dataclass(frozen=True)
class VadEvent:
    """Speech started or stopped at ``ms`` since the session's first appended audio."""

    kind: Literal["start", "stop"]
    ms: int


class VadEngine:
    """The shared silero-vad model and the single thread it runs on."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        self._session: Any = onnxruntime.InferenceSession(
            str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")

    def probability(
        self, window: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> tuple[float, npt.NDArray[np.float32]]:
        """Speech probability of one [CONTEXT + WINDOW] float window and the next recurrent state."""
        inputs = {"input": window[None, :], "state": state, "sr": np.array(VAD_RATE, dtype=np.int64)}
        out, next_state = self._session.run(None, inputs)
        return float(out.reshape(-1)[0]), next_state

    def warm_up(self) -> None:
        """One inference on silence (the first ``run`` of an ONNX session is the slow one)."""
        self.probability(
            np.zeros(CONTEXT + WINDOW, dtype=np.float32), np.zeros(STATE_SHAPE, dtype=np.float32)
        )

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the VAD thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Stop the VAD thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def model_path() -> Path:
    """silero-vad's packaged ONNX model, found without importing the package (which imports torch)."""
    spec = find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_MODEL_FILE)


class SharedEngine:
    """One `VadEngine` for the whole process, shared by every session (thread-safe: the servers of one
    process may run on different threads, as in the test harness).

    Args:
        load: builds the engine (blocking: it loads the ONNX model).
    """

    def __init__(self, load: Callable[[], VadEngine] = VadEngine) -> None:
        self._load = load
        self._engine: VadEngine | None = None
        self._holders = 0
        self._lock = threading.Lock()

    def get(self) -> VadEngine:
        """The engine, loaded on first use (blocking: call it off the event loop)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load()
            return self._engine

    async def load(self) -> VadEngine:
        """`get` without blocking the event loop."""
        engine = self._engine
        return engine if engine is not None else await asyncio.to_thread(self.get)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[VadEngine]:
        """Hold the engine for a server's lifetime: loaded and warmed up (one inference on its thread) off the
        event loop before the server takes its first session; the last holder to leave stops its thread."""
        started = time.perf_counter()
        engine = await asyncio.to_thread(self._hold)
        try:
            await engine.run(engine.warm_up)
            log.info("server VAD: silero-vad loaded and warmed up in %.2f s", time.perf_counter() - started)
            yield engine
        finally:
            self._let_go()

    def _hold(self) -> VadEngine:
        engine = self.get()
        with self._lock:
            self._holders += 1
        return engine

    def _let_go(self) -> None:
        with self._lock:
            self._holders -= 1
            engine = self._engine if self._holders == 0 else None
            if engine is not None:
                self._engine = None  # a later session or server loads a fresh one
        if engine is not None:
            engine.close()


_SHARED = SharedEngine()


def shared_engine() -> VadEngine:
    """The process-wide engine, loaded on first use (blocking: call it off the event loop)."""
    return _SHARED.get()


async def load_shared_engine() -> VadEngine:
    """The process-wide engine without blocking the event loop (a session outside a server loads it here)."""
    return await _SHARED.load()


def held_engine() -> AbstractAsyncContextManager[VadEngine]:
    """Hold the process-wide engine for a server's lifetime (realtime/http/app.py's lifespan): see
    `SharedEngine.held`. No session pays for loading it."""
    return _SHARED.held()


class TurnDetector:
    """Per-session VAD state machine over appended wire audio.

    Args:
        settings: the session's turn detection settings.
        fmt: the session's input audio format.
        engine: the model to use (defaults to the process-wide one, loaded off the loop on first `feed`).
        start_ms: session audio time at which this detector starts (event times count from the session's
            first appended audio, also when turn detection is reconfigured mid-session).
    """

    def __init__(
        self, settings: TurnDetection, fmt: AudioFormat, engine: VadEngine | None = None, *, start_ms: int = 0
    ) -> None:
        self.settings = settings
        self.fmt = fmt
        self._engine = engine
        self._start_ms = start_ms
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._samples = 0  # 16 kHz samples consumed since the session's first audio
        self._speaking = False
        self._silence_start: int | None = None

    async def feed(self, wire: bytes) -> list[VadEvent]:
        """Process appended audio on the VAD thread in slices of `SLICE_MS`; return the start/stop events."""
        if self._engine is None:
            self._engine = await load_shared_engine()
        fmt = self.fmt
        step = SLICE_MS * fmt.sample_rate // MS_PER_SECOND * fmt.bytes_per_sample
        events: list[VadEvent] = []
        for start in range(0, len(wire), step):
            events += await self._engine.run(self._process, self._engine, wire[start : start + step])
        return events

    def _process(self, engine: VadEngine, wire: bytes) -> list[VadEvent]:
        pcm = wire_to_pcm16(wire, self.fmt, "audio")
        audio = resample(pcm16_to_float(pcm), self.fmt.sample_rate, VAD_RATE)
        self._pending = np.concatenate([self._pending, audio])
        threshold = self.settings.threshold
        silence_needed = self.settings.effective_silence_ms * VAD_RATE // MS_PER_SECOND
        events: list[VadEvent] = []
        while self._pending.size >= WINDOW:
            chunk, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            window = np.concatenate([self._context, chunk]).astype(np.float32)
            self._context = chunk[-CONTEXT:]
            prob, self._state = engine.probability(window, self._state)
            start = self._samples
            self._samples += WINDOW
            if not self._speaking and prob >= threshold:
                self._speaking, self._silence_start = True, None
                events.append(VadEvent("start", self._ms(start)))
            elif self._speaking:
                if prob >= threshold - HYSTERESIS:
                    self._silence_start = None
                    continue
                if self._silence_start is None:
                    self._silence_start = start
                if self._samples - self._silence_start >= silence_needed:
                    self._speaking = False
                    events.append(VadEvent("stop", self._ms(self._silence_start)))
                    self._silence_start = None
        return events

    @property
    def speaking(self) -> bool:
        """True between a start and its stop."""
        return self._speaking

    def _ms(self, samples: int) -> int:
        return self._start_ms + samples * MS_PER_SECOND // VAD_RATE


SEGMENT_PAD_MS = 200  # audio kept around each detected stretch of speech (word onsets and tails)


async def speech_segments(pcm16: bytes, settings: TurnDetection | None = None) -> list[tuple[int, int]]:
    """The stretches of speech in a whole recording (PCM16 at 24 kHz), as ``(start_ms, end_ms)``, in order
    and disjoint.

    The server VAD (`TurnDetector`, ``settings`` or the server_vad defaults) runs over the audio; each
    stretch from a speech start to its stop is widened by `SEGMENT_PAD_MS` on both sides (clipped to the
    audio, merged where they then touch). Speech still going at the end runs to the end. No speech: [].
    """
    fmt = AudioFormat.PCM16
    detector = TurnDetector(settings or TurnDetection(), fmt)
    events = await detector.feed(pcm16)
    total_ms = len(pcm16) // fmt.bytes_per_sample * MS_PER_SECOND // fmt.sample_rate
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for event in events:
        if event.kind == "start":
            start = event.ms
        elif start is not None:
            spans.append((start, event.ms))
            start = None
    if start is not None:
        spans.append((start, total_ms))
    segments: list[tuple[int, int]] = []
    for begin, end in spans:
        begin, end = max(begin - SEGMENT_PAD_MS, 0), min(end + SEGMENT_PAD_MS, total_ms)
        if segments and begin <= segments[-1][1]:
            segments[-1] = (segments[-1][0], max(end, segments[-1][1]))
        elif end > begin:
            segments.append((begin, end))
    return segments
