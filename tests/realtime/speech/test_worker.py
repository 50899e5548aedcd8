"""InferenceWorker: one thread runs every job; dropped groups and cancelled callers cost no decode time."""

from __future__ import annotations

import asyncio
import threading
from functools import partial

import pytest

from realtime.speech.worker import InferenceWorker, WorkerClosed


class Model:
    def __init__(self) -> None:
        self.threads: list[str] = []
        self.ran: list[str] = []
        self.gate = threading.Event()

    def work(self, name: str) -> str:
        self.threads.append(threading.current_thread().name)
        self.ran.append(name)
        return name.upper()

    def block(self) -> str:
        self.gate.wait(timeout=10)
        return "unblocked"


async def _started(model: Model, **kwargs: int) -> InferenceWorker[Model]:
    worker = InferenceWorker(lambda: model, name="test-worker", **kwargs)
    await worker.start()
    return worker


async def test_jobs_run_in_order_on_one_named_thread() -> None:
    model = Model()
    worker = await _started(model)
    try:
        results = await asyncio.gather(*(worker.run(partial(Model.work, name=f"j{i}")) for i in range(5)))
        assert results == ["J0", "J1", "J2", "J3", "J4"]
        assert model.ran == ["j0", "j1", "j2", "j3", "j4"]
        assert set(model.threads) == {"test-worker"}
        assert threading.current_thread().name != "test-worker"
    finally:
        await worker.aclose()


async def test_loader_runs_on_the_worker_thread() -> None:
    seen: list[str] = []

    def loader() -> Model:
        seen.append(threading.current_thread().name)
        return Model()

    worker = InferenceWorker(loader, name="loader-thread")
    await worker.start()
    await worker.aclose()
    assert seen == ["loader-thread"]


async def test_job_errors_reach_the_caller_and_the_worker_survives() -> None:
    worker = await _started(Model())
    try:

        def boom(_m: Model) -> None:
            raise ValueError("bad codes")

        with pytest.raises(ValueError, match="bad codes"):
            await worker.run(boom)
        assert await worker.run(lambda m: m.work("after")) == "AFTER"
    finally:
        await worker.aclose()


async def test_dropped_group_skips_pending_jobs() -> None:
    model = Model()
    worker = await _started(model)
    try:
        blocker = asyncio.create_task(worker.run(lambda m: m.block()))
        group = worker.group("resp_1")
        other = worker.group("resp_2")
        pending = [
            asyncio.create_task(worker.run(partial(Model.work, name=f"g{i}"), group=group)) for i in range(3)
        ]
        survivor = asyncio.create_task(worker.run(lambda m: m.work("other"), group=other))
        await asyncio.sleep(0)
        worker.drop(group)
        model.gate.set()
        assert await blocker == "unblocked"
        assert await survivor == "OTHER"
        for task in pending:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert model.ran == ["other"]
        assert worker.jobs_dropped == 3
        with pytest.raises(asyncio.CancelledError):
            await worker.run(lambda m: m.work("late"), group=group)
    finally:
        model.gate.set()
        await worker.aclose()


async def test_cancelled_caller_job_is_not_run() -> None:
    model = Model()
    worker = await _started(model)
    try:
        blocker = asyncio.create_task(worker.run(lambda m: m.block()))
        victim = asyncio.create_task(worker.run(lambda m: m.work("victim")))
        await asyncio.sleep(0)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        model.gate.set()
        await blocker
        assert await worker.run(lambda m: m.work("next")) == "NEXT"
        assert model.ran == ["next"]
    finally:
        model.gate.set()
        await worker.aclose()


async def test_pending_jobs_are_bounded() -> None:
    model = Model()
    worker = await _started(model, max_pending=2)
    try:
        first = asyncio.create_task(worker.run(lambda m: m.block()))
        second = asyncio.create_task(worker.run(lambda m: m.work("second")))
        third = asyncio.create_task(worker.run(lambda m: m.work("third")))
        for _ in range(20):
            await asyncio.sleep(0)
        # two jobs hold both slots; the third waits on the loop side and is not queued yet
        assert not third.done()
        assert worker.queued_jobs == 2
        model.gate.set()
        assert list(await asyncio.gather(first, second, third)) == ["unblocked", "SECOND", "THIRD"]
    finally:
        model.gate.set()
        await worker.aclose()


async def test_failed_loader_fails_start_and_closes() -> None:
    def loader() -> Model:
        raise OSError("no weights")

    worker: InferenceWorker[Model] = InferenceWorker(loader)
    with pytest.raises(WorkerClosed, match="no weights"):
        await worker.start()
    assert not worker.running
    with pytest.raises(WorkerClosed):
        await worker.run(lambda m: m.work("x"))


async def test_closed_worker_refuses_jobs_and_close_is_idempotent() -> None:
    worker = await _started(Model())
    assert worker.running
    await worker.aclose()
    await worker.aclose()
    with pytest.raises(WorkerClosed):
        await worker.run(lambda m: m.work("x"))
