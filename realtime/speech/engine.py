"""The speech engine seam: what the reply pipeline needs from a codes -> PCM model, and its one implementation.

The pipeline never touches torch or Token2Wav directly. It talks to a `SpeechEngine` through the inference
worker (realtime/speech/worker.py), on the worker thread only: load once, prime voices, start a stream per
response, push codes, finish or cancel it, and unload to free the memory. Another engine of the same family
(audio codes in, 24 kHz PCM out) is added by implementing this protocol; the pipeline does not change.

Voices and streams are opaque handles to the pipeline (`EngineVoice`, `EngineStream`): each engine checks that
it was given its own kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

PcmChunks = list[npt.NDArray[np.int16]]
# What one stream's step gave: its PCM chunks, or the error that failed it (the others of a batch go on).
StepOutcome = PcmChunks | Exception


class EngineVoice(Protocol):
    """A primed voice: whatever the engine precomputes from a prompt wav (read-only once made)."""


class EngineStream(Protocol):
    """One response's decoding state: owned by one response, used on the worker thread only."""


@dataclass(frozen=True)
class StepRequest:
    """One stream's work for a worker turn (see `SpeechEngine.step_batch`).

    Attributes:
        stream: the stream (each stream at most once per batch).
        codes: audio codes to append.
        finish: the speech segment ends: decode what is pending as the final window and close the stream.
    """

    stream: EngineStream
    codes: tuple[int, ...] = ()
    finish: bool = False


@dataclass(frozen=True)
class StreamTiming:
    """How the engine's chunk schedule starts: the pipeline sizes its warm-up and first steps from it.

    Attributes:
        first_hop_codes: codes the first chunk consumes.
        lookahead_codes: codes a chunk needs beyond its hop before it can run.
        steady_hop_codes: codes a steady chunk consumes (bounds one decode step).
    """

    first_hop_codes: int
    lookahead_codes: int
    steady_hop_codes: int


class SpeechEngine(Protocol):
    """A codes -> PCM model shared by every session. Every method runs on the inference worker thread."""

    @property
    def sample_rate(self) -> int:
        """Rate of the PCM the engine produces (24 kHz for Token2Wav)."""
        ...

    @property
    def timing(self) -> StreamTiming:
        """The chunk schedule's shape."""
        ...

    def load_voice(self, wav: Path) -> EngineVoice:
        """Prime a voice from a prompt wav (speaker embedding, prompt tokens, caches)."""
        ...

    def start(self, voice: EngineVoice) -> EngineStream:
        """A fresh stream for one response in ``voice``."""
        ...

    def push(self, stream: EngineStream, codes: Sequence[int]) -> PcmChunks:
        """Add audio codes; return the int16 PCM chunks that became ready (possibly none)."""
        ...

    def finish(self, stream: EngineStream) -> PcmChunks:
        """End of the speech segment: decode what is pending and return the rest of the PCM."""
        ...

    def cancel(self, stream: EngineStream) -> None:
        """Drop the stream's state now (barge-in or cancel); nothing more is emitted."""
        ...

    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]:
        """Several streams' pushes/finishes in one turn, their ready windows decoded as one batch.

        Each stream's PCM equals what `push`/`finish` alone would give. A request that is invalid on its own
        (bad codes, finished stream) gets its error and the rest still run; a failure of the batched
        computation itself is every batched request's outcome. Results are in request order.
        """
        ...

    def batch_histogram(self) -> dict[int, int]:
        """How many batched decode calls ran with each number of windows (since load)."""
        ...

    def state_bytes(self, stream: EngineStream) -> int:
        """Memory the stream may hold at most (its caches at their bound), for admission control and figures."""
        ...

    def unload(self) -> None:
        """Free the model's memory; no method may be called afterwards."""
        ...


class Token2WavEngine:
    """`SpeechEngine` over Step-Audio-2's Token2Wav (flow matching + HiFT), with one chunk schedule.

    torch and token2wav are imported lazily in `load`, so importing this module stays cheap.
    """

    def __init__(self, model: object, schedule: object) -> None:
        from token2wav.model import Token2Wav
        from token2wav.stream import ChunkSchedule

        assert isinstance(model, Token2Wav) and isinstance(schedule, ChunkSchedule)
        self._model: Token2Wav | None = model
        self._schedule = schedule
        # A compiled decoder builds its graph on the first voice (at start-up), never inside a response.
        self._warm_pending = model.options.compile

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str,
        dtype: str,
        threads: int,
        first_hop_tokens: int,
        hop_tokens: int,
        hop_growth: float,
        compile: bool = False,
        attention: str = "per-stream",
    ) -> Token2WavEngine:
        """Load Token2Wav from ``model_dir`` (call on the worker thread: it sets torch's thread pool).

        Args:
            model_dir: the token2wav directory.
            device: torch device.
            dtype: flow dtype name (float32, bfloat16, float16).
            threads: torch intra-op threads.
            first_hop_tokens: the chunk schedule's first hop.
            hop_tokens: its steady hop.
            hop_growth: its hop growth.
            compile: `torch.compile` the DiT pass (token2wav/compiled.py); its graph is built when the first
                voice is loaded, on this thread, before any response. Off by default: the measured gain on
                the CPU does not pay for the minutes of start-up (docs/TOKEN2WAV.md §8.4).
            attention: ``per-stream`` or ``ragged`` (token2wav/dit_attention.py).
        """
        import torch

        from token2wav.model import Token2Wav
        from token2wav.options import ATTENTION_MODES, DecodeOptions
        from token2wav.stream import ChunkSchedule

        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        torch.set_num_threads(threads)  # process-wide intra-op pool; see ServerConfig.torch_threads
        options = DecodeOptions(attention=attention, compile=compile)  # type: ignore[arg-type]  # checked above
        model = Token2Wav.from_dir(model_dir, device=device, dtype=getattr(torch, dtype), options=options)
        schedule = ChunkSchedule(
            first_hop_tokens=first_hop_tokens, hop_tokens=hop_tokens, hop_growth=hop_growth
        )
        return cls(model, schedule)

    @property
    def model(self):  # type: ignore[no-untyped-def]  # torch model: typed in token2wav
        """The loaded Token2Wav (raises once unloaded)."""
        if self._model is None:
            raise RuntimeError("the speech engine was unloaded")
        return self._model

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def timing(self) -> StreamTiming:
        schedule = self._schedule
        return StreamTiming(schedule.first_hop_tokens, schedule.lookahead_tokens, schedule.hop_tokens)

    def load_voice(self, wav: Path) -> EngineVoice:
        voice = self.model.load_voice(wav)
        if self._warm_pending:
            self.model.warmup(voice)  # builds the compiled graph: start-up time, not a response's
            self._warm_pending = False
        engine_voice: EngineVoice = voice
        return engine_voice

    def start(self, voice: EngineVoice) -> EngineStream:
        from token2wav.model import Voice

        assert isinstance(voice, Voice), "a voice primed by another engine"
        stream: EngineStream = self.model.start(voice, self._schedule)
        return stream

    def push(self, stream: EngineStream, codes: Sequence[int]) -> PcmChunks:
        return list(self.model.push(_own(stream), codes))

    def finish(self, stream: EngineStream) -> PcmChunks:
        return list(self.model.finish(_own(stream)))

    def cancel(self, stream: EngineStream) -> None:
        _own(stream).close()

    def state_bytes(self, stream: EngineStream) -> int:
        # admission sizes the server from this: the DiT caches at their bound (a stream's own slots fill in as
        # it speaks, up to the trim rule's ceiling), not the few MB a fresh stream has written so far
        flow = _own(stream).flow
        return int(max(flow.nbytes(), flow.nbytes() - flow.dit.nbytes() + flow.dit.bound_nbytes()))

    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]:
        from token2wav.batch import StreamStep
        from token2wav.errors import StreamError

        model = self.model
        outcomes: list[StepOutcome | None] = [None] * len(requests)
        steps: list[tuple[int, StreamStep]] = []
        seen: set[int] = set()
        for i, request in enumerate(requests):
            stream = _own(request.stream)
            try:
                if id(stream) in seen:
                    raise StreamError("a stream appears twice in one batch")
                if stream.finished:
                    raise StreamError("push on a finished stream")
                codes = model.check(request.codes)
            except Exception as exc:  # this request's own mistake: it alone fails
                outcomes[i] = exc
                continue
            seen.add(id(stream))
            steps.append((i, StreamStep(stream, codes, request.finish)))
        try:
            model.step_many([step for _, step in steps])
        except Exception as exc:  # the batched computation failed: every stream in it is in doubt
            for i, _ in steps:
                outcomes[i] = exc
        else:
            for i, step in steps:
                outcomes[i] = list(step.out)
        return [outcome if outcome is not None else [] for outcome in outcomes]

    def batch_histogram(self) -> dict[int, int]:
        return dict(self.model.window_batches)

    def unload(self) -> None:
        self._model = None


def _own(stream: EngineStream):  # type: ignore[no-untyped-def]  # returns token2wav's stream type
    from token2wav.stream import Token2WavStream

    assert isinstance(stream, Token2WavStream), "a stream started by another engine"
    return stream
