"""TEST DOUBLE of the speech engine (`realtime.speech.engine.SpeechEngine`), for pipeline and worker tests.

`ScheduleDecoder` follows the Token2Wav chunk schedule and sample accounting exactly (docs/TOKEN2WAV.md §4.1,
§5.3: first call 960*H - 3840 samples, then 960*H, the last call the rest; 960 samples per code in total) but
renders each code as a constant PCM level instead of running a flow model, so tests can check which codes
produced which samples. It records the thread of every call to prove the worker owns it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from realtime.speech.engine import EngineStream, EngineVoice, StepOutcome, StepRequest, StreamTiming

SAMPLES_PER_CODE = 960  # 24 kHz / 25 Hz
LOOKAHEAD = 3
HIFT_TAIL = 3840  # samples withheld by every non-final call


@dataclass(frozen=True)
class Schedule:
    """Same field names as token2wav.ChunkSchedule."""

    first_hop_tokens: int = 10
    hop_tokens: int = 25
    lookahead_tokens: int = LOOKAHEAD


@dataclass
class DoubleVoice:
    path: str
    level: int


@dataclass
class DoubleStream:
    voice: DoubleVoice
    schedule: Schedule
    pending: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)  # one level per sample, not yet emitted
    calls: int = 0
    finished: bool = False


def level_of(code: int) -> int:
    """The PCM level the double renders a code as."""
    return code % 1000


class ScheduleDecoder:
    """A Token2Wav stand-in with the real schedule and sample counts."""

    sample_rate = 24_000

    def __init__(
        self,
        *,
        fail_on_code: int | None = None,
        gate: threading.Event | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self.schedule = schedule or Schedule()
        self.cancelled = 0
        self.unloaded = False
        self.threads: set[str] = set()
        self.pushed: list[int] = []
        self.starts = 0
        self.push_calls = 0
        self.push_started = threading.Event()
        self.finishes = 0
        self.fail_on_code = fail_on_code
        self.gate = gate  # when set, push() waits on it (to hold the worker busy in tests)
        self.batches: list[int] = []  # requests per step_batch call

    def _seen(self) -> None:
        self.threads.add(threading.current_thread().name)

    def load_voice(self, wav: str | Path) -> DoubleVoice:
        self._seen()
        return DoubleVoice(str(wav), level=7)

    @property
    def timing(self) -> StreamTiming:
        s = self.schedule
        return StreamTiming(s.first_hop_tokens, s.lookahead_tokens, s.hop_tokens)

    def start(self, voice: EngineVoice) -> DoubleStream:
        self._seen()
        self.starts += 1
        assert isinstance(voice, DoubleVoice | str)
        return DoubleStream(voice if isinstance(voice, DoubleVoice) else DoubleVoice(voice, 7), self.schedule)

    def cancel(self, stream: EngineStream) -> None:
        assert isinstance(stream, DoubleStream)
        self.cancelled += 1
        stream.finished = True

    def state_bytes(self, stream: EngineStream) -> int:
        assert isinstance(stream, DoubleStream)
        return 2 * len(stream.samples)

    def unload(self) -> None:
        self.unloaded = True

    def push(self, stream: EngineStream, codes: Sequence[int]) -> list[npt.NDArray[np.int16]]:
        assert isinstance(stream, DoubleStream)
        self._seen()
        self.push_calls += 1
        self.push_started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        for code in codes:
            if not 0 <= code < 6561 or code == self.fail_on_code:
                raise ValueError(f"invalid code {code}")
        self.pushed.extend(codes)
        stream.pending.extend(codes)
        out = []
        while True:
            hop = stream.schedule.first_hop_tokens if stream.calls == 0 else stream.schedule.hop_tokens
            if len(stream.pending) < hop + stream.schedule.lookahead_tokens:
                break
            out.append(self._chunk(stream, stream.pending[:hop], last=False))
            stream.pending = stream.pending[hop:]
        return out

    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]:
        """Each request through `push`/`finish` in turn (the double has nothing to batch)."""
        self.batches.append(len(requests))
        outcomes: list[StepOutcome] = []
        for request in requests:
            try:
                out = self.push(request.stream, request.codes) if request.codes else []
                if request.finish:
                    out += self.finish(request.stream)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(out)
        return outcomes

    def batch_histogram(self) -> dict[int, int]:
        return dict(Counter(self.batches))

    def finish(self, stream: EngineStream) -> list[npt.NDArray[np.int16]]:
        assert isinstance(stream, DoubleStream)
        self._seen()
        self.finishes += 1
        stream.finished = True
        if not stream.pending and not stream.samples:
            return []
        chunk = self._chunk(stream, stream.pending, last=True)
        stream.pending = []
        return [chunk]

    def _chunk(self, stream: DoubleStream, codes: Sequence[int], *, last: bool) -> npt.NDArray[np.int16]:
        stream.calls += 1
        for code in codes:
            stream.samples.extend([level_of(code)] * SAMPLES_PER_CODE)
        emit = len(stream.samples) if last else len(stream.samples) - HIFT_TAIL
        out = np.asarray(stream.samples[:emit], dtype=np.int16)
        del stream.samples[:emit]
        return out
