"""What every concurrent-sessions benchmark shares: sessions started together or staggered, and percentiles."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

SampleT = TypeVar("SampleT")


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 (nearest rank) and the mean of ``values``; all None when there are none."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.fmean(ordered)}


async def run_staggered(
    sessions: Sequence[Callable[[], Awaitable[list[SampleT]]]], stagger_ms: float
) -> tuple[list[SampleT], list[str], float]:
    """Run every session concurrently, session ``i`` starting ``i x stagger_ms`` after the first.

    Returns:
        every session's samples, the failures of the sessions that raised (one line each), and the wall
        seconds the whole run took.
    """

    async def staggered(index: int, session: Callable[[], Awaitable[list[SampleT]]]) -> list[SampleT]:
        await asyncio.sleep(index * stagger_ms / 1000)
        return await session()

    started = time.perf_counter()
    results = await asyncio.gather(*(staggered(i, s) for i, s in enumerate(sessions)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    samples: list[SampleT] = []
    failures: list[str] = []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(f"{type(result).__name__}: {result}")
        else:
            samples.extend(result)
    return samples, failures, elapsed
