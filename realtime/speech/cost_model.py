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


@dataclass(frozen=True)
class CostSnapshot:
    """The cost model's estimates at one moment.

    Attributes:
        step_seconds: per measured batch size, the smoothed wall seconds per step (the batch's time / size).
        batches: per measured batch size, how many batches the estimate is made of.
        audio_samples_per_step: smoothed PCM samples one step produced (None before the first batch).
    """

    step_seconds: dict[int, float]
    batches: dict[int, int]
    audio_samples_per_step: float | None


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

    def step_seconds(self, batch_size: int) -> float | None:
        """Estimated wall seconds per step in a batch of `batch_size` steps (None before any measurement).

        A size not measured yet takes the estimate of the nearest measured size (the smaller one on a tie):
        per-step cost falls as batches grow, so a smaller neighbour errs on the expensive side.
        """
        with self._lock:
            if not self._step_seconds:
                return None
            if batch_size in self._step_seconds:
                return self._step_seconds[batch_size]
            nearest = min(self._step_seconds, key=lambda size: (abs(size - batch_size), size))
            return self._step_seconds[nearest]

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
        """Audio seconds the decoder delivers per wall second in batches of `batch_size` (its capacity)."""
        per_step = self.step_seconds(batch_size)
        with self._lock:
            samples = self._samples_per_step
        if per_step is None or samples is None or per_step <= 0:
            return None
        return samples / sample_rate / per_step

    def snapshot(self) -> CostSnapshot:
        """An immutable copy of every estimate."""
        with self._lock:
            return CostSnapshot(dict(self._step_seconds), dict(self._batches), self._samples_per_step)
