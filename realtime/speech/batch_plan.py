"""Which waiting decode steps the worker runs together next: first chunks first, steady windows by deadline.

The worker's scheduler (realtime/speech/worker.py) calls `plan_batch` once per turn with every waiting step.
Batching is not preemptive: a step that arrives while a batch runs waits for it, and each step added to a batch
makes the whole batch longer. So the plan keeps three rules:

* **First chunks go alone, a few at a time.** Steps of responses without audio yet (a listener is waiting for
  the answer to start) run as their own batch, joined only by steady steps that would run dry if they waited
  one more batch; the batch is short (``first_chunk_seconds``), so answers that start together are staggered
  (their second chunks, due soon after, are then staggered too), and no longer than the slack of the most
  urgent steady step.
  Batched with steady windows, a first chunk took several times its idle cost (issue 27: TTFA p50 919 ms
  batched vs 405 ms one at a time at 16 sessions).
* **A steady batch ends before its most urgent listener runs dry.** Its estimated time stays within the slack
  (deadline - now) of the most urgent step, unless that step is already late (then the batch is as large as the
  time budget allows: the fastest way to serve everyone behind).
* **While a response is about to start, steady batches stay short** (`starting_budget_s`), so its first chunk
  waits for a short batch at most; and **no batch outlasts the slack of a stream with little audio ahead whose
  next step is still on its way** (``upcoming``): a stream in its first chunks, or just after them (see
  ``EXPOSED_AHEAD_S`` in realtime/speech/decoder.py); its first chunk is short (~0.25 s) and the LLM delivers
  the next one's codes only just in time, so a long batch started meanwhile would make its listener run dry.

Everything here is pure: the cost estimates come from a `DecodeCostModel`, time from the caller.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from realtime.speech.cost_model import DecodeCostModel

StepT = TypeVar("StepT")

URGENT_BATCHES = 2.0  # a steady step joins a first-chunk batch when its slack is under this many such batches


@dataclass(frozen=True)
class BatchLimits:
    """The scheduler's bounds.

    Attributes:
        max_batch: most steps in one batch.
        batch_seconds: target wall time of one steady batch; None: no time bound (always ``max_batch``).
        starting_budget_s: wall time bound of a steady batch while a response waits for its first chunk.
        first_chunk_seconds: wall time bound of a batch of first chunks. Short, so answers starting together
            are staggered as one at a time would be: their second chunks (due ~0.3 s after the first) then
            arrive staggered too, instead of all at once behind one long batch.
    """

    max_batch: int
    batch_seconds: float | None
    starting_budget_s: float | None = None
    first_chunk_seconds: float | None = None


@dataclass(frozen=True)
class Waiting(Generic[StepT]):
    """One waiting step as the plan sees it.

    Attributes:
        step: the caller's job (returned as is).
        stream: identity of its engine stream (one step per stream per batch).
        has_audio: its response already has audio out (False: a first chunk).
        deadline: `perf_counter` at which its listener runs out of audio (for a first chunk: when submitted).
        order: submission order (ties).
    """

    step: StepT
    stream: Hashable
    has_audio: bool
    deadline: float
    order: int


def plan_batch(
    waiting: Sequence[Waiting[StepT]],
    cost: DecodeCostModel,
    limits: BatchLimits,
    now: float,
    *,
    starting: bool = False,
    upcoming: Sequence[float] = (),
) -> tuple[list[StepT], list[StepT]]:
    """Split the waiting steps into the next batch and the rest (see the module docstring).

    Args:
        waiting: every step waiting now (any order).
        cost: measured cost per step by batch size.
        limits: the scheduler's bounds.
        now: `perf_counter` now.
        starting: a response has started and waits for its first chunk (its step may not be queued yet).
        upcoming: deadlines of streams with little audio ahead whose next step is not queued yet (its codes are
            still arriving): a batch must end before they run dry, as if their steps were waiting.

    Returns:
        (steps to run as one batch, steps left waiting); the batch is empty only when nothing waits.
    """
    ordered = sorted(waiting, key=lambda w: (w.has_audio, w.deadline, w.order))
    first = [w for w in ordered if not w.has_audio]
    steady = [w for w in ordered if w.has_audio]
    if first:
        # ...but not so many that a stream already speaking runs dry waiting for them
        budget = _shorter(limits.batch_seconds, limits.first_chunk_seconds)
        budget = _within_slack(budget, steady, upcoming, cost, now)
        chosen = _distinct(first, _fit(cost, budget, limits.max_batch))
        size = len(chosen)
        for candidate in steady:
            if size >= limits.max_batch:
                break
            after = cost.batch_seconds(size + 1)
            urgent_within = 0.0 if after is None else URGENT_BATCHES * after
            if candidate.deadline - now < urgent_within:
                if _add(chosen, candidate):
                    size += 1
    else:
        budget = limits.batch_seconds
        if starting:
            budget = _shorter(budget, limits.starting_budget_s)
        budget = _within_slack(budget, steady, upcoming, cost, now)
        chosen = _distinct(steady, _fit(cost, budget, limits.max_batch))
    picked = {id(w) for w in chosen}
    return [w.step for w in chosen], [w.step for w in ordered if id(w) not in picked]


def _shorter(budget: float | None, bound: float | None) -> float | None:
    if bound is None:
        return budget
    return bound if budget is None else min(budget, bound)


def _within_slack(
    budget: float | None,
    steady: Sequence[Waiting[StepT]],
    upcoming: Sequence[float],
    cost: DecodeCostModel,
    now: float,
) -> float | None:
    """``budget`` cut to the slack of the most urgent steady step, queued or upcoming (an upcoming one also
    needs its own step after this batch), unless that is late already (then a large batch serves everyone
    behind soonest)."""
    single = cost.batch_seconds(1)
    if single is None:
        return budget
    slacks = [w.deadline - now for w in steady] + [deadline - now - single for deadline in upcoming]
    if not slacks:
        return budget
    slack = min(slacks)
    if slack <= single:
        return budget
    return slack if budget is None else min(budget, slack)


def _fit(cost: DecodeCostModel, budget: float | None, max_batch: int) -> int:
    return max_batch if budget is None else cost.largest_batch(budget, max_batch)


def _distinct(ordered: Sequence[Waiting[StepT]], limit: int) -> list[Waiting[StepT]]:
    """The first `limit` steps of distinct streams, in order."""
    chosen: list[Waiting[StepT]] = []
    for candidate in ordered:
        if len(chosen) >= limit:
            break
        _add(chosen, candidate)
    return chosen


def _add(chosen: list[Waiting[StepT]], candidate: Waiting[StepT]) -> bool:
    if any(w.stream == candidate.stream for w in chosen):
        return False
    chosen.append(candidate)
    return True
