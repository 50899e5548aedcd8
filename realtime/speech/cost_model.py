"""What one decode step costs the worker, by batch size: the measured figures behind batching and admission.

A step is one stream's `StepRequest` in a worker turn; a batch of N steps runs as one `step_batch` call whose
wall time the N steps share. `DecodeCostModel` keeps, per batch size, a running (exponentially smoothed)
estimate of the wall seconds per step, and a running estimate of the audio each step produced. From these it
answers what the worker's scheduler asks (how many steps fit in a time budget) and what an admission policy
needs (how many audio seconds per wall second the decoder delivers at a batch size).

Thread-safety: `observe` is called on the worker thread, the readers from anywhere (the event loop): every
method takes the model's lock, and `snapshot` returns an immutable copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

DEFAULT_SMOOTHING = 0.3  # weight of the newest batch in each running estimate
# Decay per batch of the running totals behind `recent_audio_seconds_per_second` (~the last 50 batches).
RECENT_DECAY = 0.98


@dataclass(frozen=True)
class CostSnapshot:
    """The cost model's estimates at one moment.

    Attributes:
        step_seconds: per measured batch size, the smoothed wall seconds per step (the batch's time / size).
        batches: per measured batch size, how many batches the estimate is made of.
        audio_samples_per_step: smoothed PCM samples one step produced (None before the first batch).
        samples_by_size: per measured batch size, the smoothed PCM samples one step of it produced.
    """

    step_seconds: dict[int, float]
    batches: dict[int, int]
    audio_samples_per_step: float | None
    samples_by_size: dict[int, float]


class DecodeCostModel:
    """Running per-step cost of the decoder by batch size, and audio produced per step (module docstring).

    Args:
        smoothing: weight of the newest observation in the running estimates, in (0, 1].
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1]")
        self._smoothing = smoothing
        self._lock = threading.Lock()
        self._step_seconds: dict[int, float] = {}
        self._batches: dict[int, int] = {}
        self._samples_per_step: float | None = None
        # Per batch size too: a step's audio depends on the load (a lightly loaded decoder runs many steps that
        # only push codes and decode nothing), so a capacity mixes the cost and the audio of the same size.
        self._samples_by_size: dict[int, float] = {}
        # Decayed totals of busy seconds and audio over recent batches that decoded audio, whatever their sizes
        # (a lightly loaded decoder also runs many cheap steps that only append codes): what the decoder
        # really delivered per second of work under the scheduler's actual mix of batch sizes and the machine's
        # actual load (other threads, other processes).
        self._recent_seconds = 0.0
        self._recent_samples = 0.0

    def _smooth(self, previous: float | None, new: float) -> float:
        return new if previous is None else previous + self._smoothing * (new - previous)

    def observe(self, batch_size: int, seconds: float, audio_samples: int) -> None:
        """Record one batch: `batch_size` steps took `seconds` of wall time and produced `audio_samples`."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        with self._lock:
            per_step = seconds / batch_size
            self._step_seconds[batch_size] = self._smooth(self._step_seconds.get(batch_size), per_step)
            self._batches[batch_size] = self._batches.get(batch_size, 0) + 1
            self._samples_per_step = self._smooth(self._samples_per_step, audio_samples / batch_size)
            self._samples_by_size[batch_size] = self._smooth(
                self._samples_by_size.get(batch_size), audio_samples / batch_size
            )
            if audio_samples > 0:  # a batch that only appended codes says nothing about the cost of audio
                self._recent_seconds = self._recent_seconds * RECENT_DECAY + seconds
                self._recent_samples = self._recent_samples * RECENT_DECAY + audio_samples

    def step_seconds(self, batch_size: int) -> float | None:
        """Estimated wall seconds per step in a batch of `batch_size` steps (None before any measurement).

        A size not measured yet takes the estimate of the nearest measured size (the smaller one on a tie):
        per-step cost falls as batches grow, so a smaller neighbour errs on the expensive side.
        """
        with self._lock:
            size = _nearest(self._step_seconds, batch_size)
            return None if size is None else self._step_seconds[size]

    def batch_seconds(self, batch_size: int) -> float | None:
        """Estimated wall seconds of one batch of `batch_size` steps (None before any measurement)."""
        per_step = self.step_seconds(batch_size)
        return None if per_step is None else per_step * batch_size

    def largest_batch(self, budget_s: float, max_batch: int) -> int:
        """The most steps (1..max_batch) whose batch fits in `budget_s`; 1 before any measurement."""
        best = 1
        for size in range(1, max_batch + 1):
            seconds = self.batch_seconds(size)
            if seconds is None:
                return 1
            if seconds <= budget_s:
                best = size
        return best

    def audio_seconds_per_second(self, batch_size: int, sample_rate: int) -> float | None:
        """Audio seconds the decoder delivers per wall second in batches of `batch_size` (its capacity).

        Cost and audio come from the same measured size (the nearest one, as in `step_seconds`): None before
        any measurement, and None while the batches measured so far produced no audio.
        """
        with self._lock:
            size = _nearest(self._step_seconds, batch_size)
            if size is None:
                return None
            per_step, samples = self._step_seconds[size], self._samples_by_size[size]
        if per_step <= 0 or samples <= 0:
            return None
        return samples / sample_rate / per_step

    def recent_audio_seconds_per_second(self, sample_rate: int) -> float | None:
        """Audio seconds per busy wall second over the recent batches (None before any audio came out).

        Unlike `audio_seconds_per_second`, which assumes every batch has a given size, this is what the
        decoder delivered under the batch sizes the scheduler really ran and the load the machine really had.
        """
        with self._lock:
            if self._recent_seconds <= 0 or self._recent_samples <= 0:
                return None
            return self._recent_samples / sample_rate / self._recent_seconds

    def snapshot(self) -> CostSnapshot:
        """An immutable copy of every estimate."""
        with self._lock:
            return CostSnapshot(
                dict(self._step_seconds),
                dict(self._batches),
                self._samples_per_step,
                dict(self._samples_by_size),
            )


def _nearest(measured: dict[int, float], batch_size: int) -> int | None:
    """The measured size closest to `batch_size` (the smaller on a tie); None when nothing is measured."""
    if not measured:
        return None
    if batch_size in measured:
        return batch_size
    return min(measured, key=lambda size: (abs(size - batch_size), size))
