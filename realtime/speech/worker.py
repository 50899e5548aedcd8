"""The inference worker: one dedicated thread owns the Token2Wav model; the event loop only awaits futures.

Jobs are plain callables that receive the model; they run one at a time, in submission order, on the worker
thread (Token2Wav's thread contract). Each job belongs to a `JobGroup` (one per response): dropping a group
makes every job of it that has not started yet complete as cancelled without running, so a cancelled
response costs no further decode time. The number of submitted-but-unfinished jobs is bounded; `run` waits for
a free slot (backpressure instead of memory growth).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_PENDING = 64
_THREAD_NAME = "t2w-worker"
_JOIN_TIMEOUT_S = 30.0  # how long aclose waits for a running job before leaving the thread behind


class WorkerClosed(RuntimeError):
    """The worker is stopped (or failed to load its model); no job can run."""


@dataclass
class JobGroup:
    """Cancellation scope for the jobs of one response. Create with `InferenceWorker.group`.

    Attributes:
        name: label for logs (the response id).
        dropped: set by `InferenceWorker.drop`; pending jobs of the group are skipped.
    """

    name: str
    dropped: bool = False
    _id: int = field(default=0, repr=False)


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    group: JobGroup | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    finished_at: float = 0.0  # perf_counter() on the worker thread when fn returned


_STOP = object()


class InferenceWorker(Generic[ModelT]):
    """Runs every call on one model on a single dedicated thread.

    Args:
        loader: builds the model; runs on the worker thread (so weight loading and any device context stay
            on it). Called once by `start`.
        max_pending: bound on jobs submitted and not yet finished, across all groups.
        name: thread name.
    """

    def __init__(
        self,
        loader: Callable[[], ModelT],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str = _THREAD_NAME,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._loader = loader
        self._name = name
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._slots: asyncio.Semaphore | None = None
        self._max_pending = max_pending
        self._thread: threading.Thread | None = None
        self._model: ModelT | None = None
        self._closed = False
        self._ids = itertools.count(1)
        self._queued = 0
        self.jobs_run = 0
        self.jobs_dropped = 0

    @property
    def running(self) -> bool:
        """True between a successful `start` and `aclose`."""
        return self._thread is not None and not self._closed

    @property
    def queued_jobs(self) -> int:
        """Jobs submitted to the thread and not finished (bounded by ``max_pending``)."""
        return self._queued

    async def start(self) -> None:
        """Start the thread and build the model on it.

        Raises:
            Exception: whatever the loader raised (the worker is then closed).
        """
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._slots = asyncio.Semaphore(self._max_pending)
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        try:
            await self.run(lambda _model: None)  # resolves once the loader has finished
        except BaseException:
            await self.aclose()
            raise

    def group(self, name: str) -> JobGroup:
        """A new cancellation scope (one per response)."""
        return JobGroup(name=name, _id=next(self._ids))

    def drop(self, group: JobGroup) -> None:
        """Skip every job of ``group`` that has not started. Idempotent; never blocks; any thread."""
        group.dropped = True

    async def run(self, fn: Callable[[ModelT], ResultT], *, group: JobGroup | None = None) -> ResultT:
        """Run ``fn(model)`` on the worker thread and return its result.

        Waits for a free slot first when ``max_pending`` jobs are in flight.

        Raises:
            asyncio.CancelledError: the caller was cancelled, or ``group`` was dropped before the job ran.
            WorkerClosed: the worker is stopped or its model failed to load.
            Exception: whatever ``fn`` raised.
        """
        result, _ = await self.run_timed(fn, group=group)
        return result

    async def run_timed(
        self, fn: Callable[[ModelT], ResultT], *, group: JobGroup | None = None
    ) -> tuple[ResultT, float]:
        """`run`, also returning the `time.perf_counter()` at which ``fn`` returned on the worker thread."""
        if self._closed or self._thread is None or self._slots is None:
            raise WorkerClosed("the inference worker is not running")
        if group is not None and group.dropped:
            raise asyncio.CancelledError(f"job group {group.name} was dropped")
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        job = _Job(fn=fn, group=group, loop=loop, future=loop.create_future())
        try:
            if self._closed:
                raise WorkerClosed("the inference worker is not running")
            self._queue.put(job)
            self._queued += 1
            try:
                result = await job.future
            finally:
                self._queued -= 1
            return result, job.finished_at
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Stop accepting jobs, let the running job finish, cancel queued ones, join the thread."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join, _JOIN_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("inference worker still busy after %.0f s; leaving it behind", _JOIN_TIMEOUT_S)

    # -- worker thread ------------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        load_error: BaseException | None = None
        try:
            self._model = self._loader()
        except BaseException as exc:  # reported to every job, including start()'s probe
            logger.exception("loading the inference model failed")
            load_error = exc
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Job)
            if load_error is not None:
                self._resolve(item, error=WorkerClosed(f"model failed to load: {load_error!r}"))
                continue
            if (item.group is not None and item.group.dropped) or item.future.cancelled():
                self.jobs_dropped += 1
                self._resolve(item, cancelled=True)
                continue
            try:
                result = item.fn(self._model)
            except BaseException as exc:  # delivered to the awaiting task, never raised on this thread
                item.finished_at = time.perf_counter()
                self._resolve(item, error=exc)
            else:
                item.finished_at = time.perf_counter()
                self.jobs_run += 1
                self._resolve(item, result=result)
        # drain what was queued behind the stop marker
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                self._resolve(item, error=WorkerClosed("the inference worker stopped"))
        self._model = None

    @staticmethod
    def _resolve(
        job: _Job,
        *,
        result: Any = None,
        error: BaseException | None = None,
        cancelled: bool = False,
    ) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if cancelled:
                job.future.cancel()
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
