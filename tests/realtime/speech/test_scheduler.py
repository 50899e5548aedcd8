"""The worker's decode-step scheduler: deadline order, one batch per turn, cancellation, per-step errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from realtime.speech.engine import StepOutcome, StepRequest
from realtime.speech.worker import InferenceWorker, WorkerClosed


class Stream:
    def __init__(self, name: str) -> None:
        self.name = name


class Engine:
    """Records each batch; a request whose codes contain -1 fails alone; `gate` holds plain jobs."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()

    def block(self) -> None:
        self.gate.wait(timeout=10)

    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]:
        names = []
        outcomes: list[StepOutcome] = []
        for request in requests:
            assert isinstance(request.stream, Stream)
            names.append(request.stream.name)
            if -1 in request.codes:
                outcomes.append(ValueError("bad code"))
            else:
                outcomes.append([np.full(len(request.codes), len(names), dtype=np.int16)])
        self.batches.append(names)
        return outcomes


async def _worker(
    engine: Engine, max_batch: int = 16, batch_seconds: float | None = None
) -> InferenceWorker[Engine]:
    worker = InferenceWorker(
        lambda: engine, name="sched-test", max_batch=max_batch, batch_seconds=batch_seconds
    )
    await worker.start()
    return worker


async def _hold(worker: InferenceWorker[Engine], engine: Engine) -> asyncio.Task[None]:
    """Occupy the worker with a plain job until `engine.gate` is set (steps pile up meanwhile)."""
    task = asyncio.create_task(worker.run(Engine.block))
    await asyncio.sleep(0.05)
    return task


async def test_waiting_steps_run_as_one_batch_first_audio_then_earliest_deadline() -> None:
    engine = Engine()
    worker = await _worker(engine)
    try:
        hold = await _hold(worker, engine)
        late = worker.run_step(StepRequest(Stream("late"), (1, 2)), deadline=10.0, has_audio=True)
        soon = worker.run_step(StepRequest(Stream("soon"), (1,)), deadline=5.0, has_audio=True)
        new = worker.run_step(StepRequest(Stream("new"), (3,)), deadline=99.0, has_audio=False)
        tasks = [asyncio.create_task(c) for c in (late, soon, new)]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await hold
        results = await asyncio.gather(*tasks)
        assert engine.batches == [["new", "soon", "late"]]
        assert [len(pcm[0]) for pcm, _, _ in results] == [2, 1, 1]
        assert all(started <= finished for _, started, finished in results)
        assert dict(worker.batch_sizes) == {3: 1}
    finally:
        await worker.aclose()


async def test_max_batch_and_one_step_per_stream_per_batch() -> None:
    engine = Engine()
    worker = await _worker(engine, max_batch=2)
    try:
        hold = await _hold(worker, engine)
        a, b = Stream("a"), Stream("b")
        calls = [
            worker.run_step(StepRequest(a, (1,)), deadline=1.0, has_audio=True),
            worker.run_step(StepRequest(a, (2,)), deadline=2.0, has_audio=True),
            worker.run_step(StepRequest(b, (3,)), deadline=3.0, has_audio=True),
            worker.run_step(StepRequest(Stream("c"), (4,)), deadline=4.0, has_audio=True),
        ]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await hold
        await asyncio.gather(*tasks)
        # a's second step waits for the next turn; each turn at most 2 streams.
        assert engine.batches == [["a", "b"], ["a", "c"]]
    finally:
        await worker.aclose()


async def test_dropped_group_steps_never_reach_the_engine_and_errors_stay_per_step() -> None:
    engine = Engine()
    worker = await _worker(engine)
    try:
        hold = await _hold(worker, engine)
        group = worker.group("resp_cancelled")
        dropped = asyncio.create_task(
            worker.run_step(StepRequest(Stream("x"), (1,)), deadline=0.0, has_audio=False, group=group)
        )
        bad = asyncio.create_task(
            worker.run_step(StepRequest(Stream("bad"), (-1,)), deadline=1.0, has_audio=True)
        )
        good = asyncio.create_task(
            worker.run_step(StepRequest(Stream("ok"), (5,)), deadline=2.0, has_audio=True)
        )
        await asyncio.sleep(0.05)
        worker.drop(group)
        engine.gate.set()
        await hold
        with pytest.raises(asyncio.CancelledError):
            await dropped
        with pytest.raises(ValueError, match="bad code"):
            await bad
        pcm, _, _ = await good
        assert len(pcm[0]) == 1
        assert engine.batches == [["bad", "ok"]]
        assert worker.jobs_dropped == 1
        with pytest.raises(asyncio.CancelledError):  # a dropped group cannot submit more
            await worker.run_step(StepRequest(Stream("x"), (1,)), deadline=0.0, has_audio=False, group=group)
    finally:
        await worker.aclose()


async def test_steps_waiting_at_close_fail_with_worker_closed() -> None:
    engine = Engine()
    worker = await _worker(engine)
    hold = await _hold(worker, engine)
    waiting = asyncio.create_task(
        worker.run_step(StepRequest(Stream("w"), (1,)), deadline=0.0, has_audio=True)
    )
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(worker.aclose())
    await asyncio.sleep(0.05)
    engine.gate.set()
    await hold
    await closing
    with pytest.raises(WorkerClosed):
        await waiting
    with pytest.raises(WorkerClosed):
        await worker.run_step(StepRequest(Stream("w"), (1,)), deadline=0.0, has_audio=True)


class SlowEngine(Engine):
    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]:
        time.sleep(0.05 * len(requests))  # 50 ms per step
        return super().step_batch(requests)


async def test_batch_size_follows_the_measured_cost_and_the_time_budget() -> None:
    engine = SlowEngine()
    worker = await _worker(engine, max_batch=16, batch_seconds=0.12)
    try:
        hold = await _hold(worker, engine)
        calls = [
            worker.run_step(StepRequest(Stream(f"s{i}"), (1,)), deadline=float(i), has_audio=True)
            for i in range(7)
        ]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await hold
        await asyncio.gather(*tasks)
        # First batch: 1 step (no cost known); then 0.12 s / ~0.05 s per step = 2 per batch, in deadline order.
        assert engine.batches[0] == ["s0"]
        assert all(len(b) <= 2 for b in engine.batches[1:])
        assert [n for b in engine.batches for n in b] == [f"s{i}" for i in range(7)]
    finally:
        await worker.aclose()


async def test_the_cost_model_learns_from_every_batch() -> None:
    """`InferenceWorker.cost` holds the measured cost per step by batch size and the audio per step."""
    engine = SlowEngine()
    worker = await _worker(engine, max_batch=4, batch_seconds=None)
    try:
        hold = await _hold(worker, engine)
        calls = [
            worker.run_step(StepRequest(Stream(f"s{i}"), (1, 2, 3)), deadline=float(i), has_audio=True)
            for i in range(4)
        ]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.05)
        engine.gate.set()
        await hold
        await asyncio.gather(*tasks)
        snapshot = worker.cost.snapshot()
        assert snapshot.batches == {4: 1}
        assert snapshot.step_seconds[4] >= 0.05  # the engine sleeps 50 ms per step
        assert snapshot.audio_samples_per_step == 3.0  # one 3-sample chunk per step
    finally:
        await worker.aclose()
