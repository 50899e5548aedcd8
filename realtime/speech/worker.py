"""The inference worker: one dedicated thread owns the speech engine; the event loop only awaits futures.

Two kinds of work run on the thread (Token2Wav's thread contract), never two at once:

* plain jobs (`run`): callables that receive the model (load a voice, start a stream), in submission order;
* decode steps (`run_step`): one stream's `StepRequest` with a deadline. Each turn the scheduler takes the
  waiting steps and hands a batch of them (distinct streams) to ONE `step_batch` call, so the engine decodes
  their ready windows as one batch. Which and how many is `realtime.speech.batch_plan.plan_batch`: first
  chunks first and on their own, steady windows by deadline, a batch no longer than `batch_seconds` at the
  measured cost per step by batch size (`cost`, a `DecodeCostModel`) nor than its most urgent listener's
  slack, and short while a response waits for its first chunk (`starting`).

`capacity` turns the measured cost into what admission needs: the audio seconds per wall second the decoder
serves with N streams speaking (realtime/speech/admission.py).

Plain jobs go before decode steps (they are short: a stream start copies nothing large). Each job belongs to
a `JobGroup` (one per response): dropping a group makes every job of it that has not started yet complete
as cancelled without running, so a cancelled response costs no further decode time. The number of
submitted-but-unfinished jobs is bounded; `run` waits for a free slot (backpressure instead of memory growth).

Size: about 400 lines: the worker thread and its scheduler's bookkeeping belong together (the batch choice
itself is in batch_plan.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from realtime.speech.batch_plan import BatchLimits, Waiting, plan_batch
from realtime.speech.cost_model import DecodeCostModel
from realtime.speech.engine import PcmChunks, StepOutcome, StepRequest

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_PENDING = 64
DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_SECONDS = 0.4  # target wall time of one batch (see the module docstring)
# A steady batch's bound while a response waits for its first chunk: that chunk waits for one such batch at most
# (about one steady step on the embedded CPU).
DEFAULT_STARTING_BATCH_SECONDS = 0.05
# A batch of first chunks: short, so answers starting together are staggered (realtime/speech/batch_plan.py).
DEFAULT_FIRST_CHUNK_BATCH_SECONDS = 0.1
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


@dataclass
class _StepJob:
    request: StepRequest
    group: JobGroup | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    has_audio: bool
    deadline: float
    order: int
    started_at: float = 0.0
    finished_at: float = 0.0


class _Batching(Protocol):
    def step_batch(self, requests: Sequence[StepRequest]) -> list[StepOutcome]: ...


_STOP = object()


class InferenceWorker(Generic[ModelT]):
    """Runs every call on one model on a single dedicated thread.

    Args:
        loader: builds the model; runs on the worker thread (so weight loading and any device context stay
            on it). Called once by `start`.
        max_pending: bound on jobs submitted and not yet finished, across all groups.
        name: thread name.
        max_batch: most decode steps handed to one `step_batch` call.
        on_batch: called on the worker thread with the size of every batch (metrics).
        batch_seconds: target wall time of one batch; None: always `max_batch`.
        starting_batch_seconds: target wall time of a steady batch while a response waits for its first chunk.
    """

    def __init__(
        self,
        loader: Callable[[], ModelT],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str = _THREAD_NAME,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
        batch_seconds: float | None = DEFAULT_BATCH_SECONDS,
        starting_batch_seconds: float | None = DEFAULT_STARTING_BATCH_SECONDS,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._batch_seconds = batch_seconds
        self._limits = BatchLimits(
            max_batch, batch_seconds, starting_batch_seconds, DEFAULT_FIRST_CHUNK_BATCH_SECONDS
        )
        # Responses whose decode stream is open and that have no audio yet (`first_chunk_expected`): an int
        # written on the event loop and read on the worker thread (a single read of an int is atomic).
        self.starting = 0
        # Deadlines of streams in their first chunks, by stream (`ramping`): set on the event loop, copied by
        # the worker thread in one C-level call (list(dict.items()) holds the GIL throughout).
        self._ramping: dict[int, float] = {}
        # Seconds per decode step by batch size and audio per step, measured on every batch (realtime/speech/
        # cost_model.py); thread-safe, so the event loop may read it (admission, metrics).
        self.cost = DecodeCostModel()
        self.batch_sizes: Counter[int] = Counter()  # decode steps per step_batch call
        self._loader = loader
        self._name = name
        self._queue: queue.SimpleQueue[_Job | _StepJob | object] = queue.SimpleQueue()
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

    async def run_step(
        self, request: StepRequest, *, deadline: float, has_audio: bool, group: JobGroup | None = None
    ) -> tuple[PcmChunks, float, float]:
        """Queue one stream's decode step for the scheduler; return its PCM and when its batch ran.

        Returns:
            (PCM chunks, `perf_counter` when its batch started, `perf_counter` when it finished).

        Args:
            request: the stream and its new codes / end.
            deadline: `time.perf_counter()` by which the stream's client runs out of audio (for a response
                without audio yet: when the step was submitted).
            has_audio: the response already has audio out; steps without it go first.
            group: the response's cancellation scope.

        Raises:
            asyncio.CancelledError: the caller was cancelled, or ``group`` was dropped before the step ran.
            WorkerClosed: the worker is stopped or its model failed to load.
            Exception: the engine's error for this step.
        """
        if self._closed or self._thread is None or self._slots is None:
            raise WorkerClosed("the inference worker is not running")
        if group is not None and group.dropped:
            raise asyncio.CancelledError(f"job group {group.name} was dropped")
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        job = _StepJob(request, group, loop, loop.create_future(), has_audio, deadline, next(self._ids))
        try:
            if self._closed:
                raise WorkerClosed("the inference worker is not running")
            self._queue.put(job)
            self._queued += 1
            try:
                pcm: PcmChunks = await job.future
            finally:
                self._queued -= 1
            return pcm, job.started_at, job.finished_at
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
        plain: deque[_Job] = deque()
        steps: list[_StepJob] = []
        stopping = False
        while not stopping:
            # Block only when idle, then take everything already queued: the scheduler sees every waiting step.
            items = [self._queue.get()] if not plain and not steps else []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is _STOP:
                    stopping = True
                elif load_error is not None:
                    assert isinstance(item, _Job | _StepJob)
                    self._resolve(item, error=WorkerClosed(f"model failed to load: {load_error!r}"))
                elif isinstance(item, _StepJob):
                    steps.append(item)
                elif isinstance(item, _Job):
                    plain.append(item)
            if stopping:
                break
            if plain:
                self._run_plain(plain.popleft())
            elif steps:
                steps = self._run_steps(steps)
        # drain what was queued behind the stop marker
        leftover: list[_Job | _StepJob] = [*plain, *steps]
        for job in leftover:
            self._resolve(job, error=WorkerClosed("the inference worker stopped"))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job | _StepJob):
                self._resolve(item, error=WorkerClosed("the inference worker stopped"))
        self._model = None

    def _skip(self, job: _Job | _StepJob) -> bool:
        """Resolve a dropped or abandoned job as cancelled; True if it was."""
        if (job.group is not None and job.group.dropped) or job.future.cancelled():
            self.jobs_dropped += 1
            self._resolve(job, cancelled=True)
            return True
        return False

    def _run_plain(self, job: _Job) -> None:
        if self._skip(job):
            return
        try:
            result = job.fn(self._model)
        except BaseException as exc:  # delivered to the awaiting task, never raised on this thread
            job.finished_at = time.perf_counter()
            self._resolve(job, error=exc)
        else:
            job.finished_at = time.perf_counter()
            self.jobs_run += 1
            self._resolve(job, result=result)

    def capacity(self, streams: int, sample_rate: int) -> float | None:
        """Audio seconds per wall second the decoder serves with ``streams`` speaking (None: nothing measured).

        The lower of two measured figures: the cost at the batch size the scheduler would run them in (all of
        them, at most ``max_batch``, no more than fit in ``batch_seconds``), and what recent batches really
        delivered per busy second (smaller batches than that ideal, a machine shared with the event loop and
        other processes). Any thread.
        """
        size = min(max(streams, 1), self._max_batch)
        if self._batch_seconds is not None:
            size = min(size, self.cost.largest_batch(self._batch_seconds, self._max_batch))
        ideal = self.cost.audio_seconds_per_second(size, sample_rate)
        recent = self.cost.recent_audio_seconds_per_second(sample_rate)
        if ideal is None or recent is None:
            return ideal if recent is None else recent
        return min(ideal, recent)

    def first_chunk_expected(self, delta: int) -> None:
        """``delta`` more (or fewer) responses wait for their first chunk (event loop)."""
        self.starting = max(0, self.starting + delta)

    def ramping_besides(self, key: int | None) -> int:
        """Streams with audio out and little of it ahead of their listeners (`ramping`), other than the stream
        ``key`` (a stream does not make way for itself; None: all of them)."""
        return len(self._ramping) - (key in self._ramping)

    def ramping(self, key: int, deadline: float | None) -> None:
        """A stream with little audio ahead (its first chunks, or under `EXPOSED_AHEAD_S` of
        realtime/speech/decoder.py) will run dry at ``deadline`` (None: no longer ramping). Event loop."""
        if deadline is None:
            self._ramping.pop(key, None)
        else:
            self._ramping[key] = deadline

    def _run_steps(self, waiting: list[_StepJob]) -> list[_StepJob]:
        """Run one batch of the steps `plan_batch` picks; return the steps still waiting."""
        live = [
            Waiting(job, id(job.request.stream), job.has_audio, job.deadline, job.order)
            for job in waiting
            if not self._skip(job)
        ]
        queued = {id(job.request.stream) for job in waiting}
        upcoming = [deadline for key, deadline in list(self._ramping.items()) if key not in queued]
        now = time.perf_counter()
        batch, rest = plan_batch(
            live, self.cost, self._limits, now, starting=self.starting > 0, upcoming=upcoming
        )
        if not batch:
            return rest
        self.batch_sizes[len(batch)] += 1
        if self._on_batch is not None:
            self._on_batch(len(batch))
        engine = cast(_Batching, self._model)
        started = time.perf_counter()
        try:
            outcomes = engine.step_batch([job.request for job in batch])
        except BaseException as exc:  # an engine that breaks its contract: fail the batch, keep the thread
            outcomes = [exc if isinstance(exc, Exception) else RuntimeError(repr(exc))] * len(batch)
        finished = time.perf_counter()
        samples = sum(len(chunk) for outcome in outcomes if isinstance(outcome, list) for chunk in outcome)
        self.cost.observe(len(batch), finished - started, samples)
        for job, outcome in zip(batch, outcomes, strict=True):
            job.started_at, job.finished_at = started, finished
            if isinstance(outcome, Exception):
                self._resolve(job, error=outcome)
            else:
                self.jobs_run += 1
                self._resolve(job, result=outcome)
        return rest

    @staticmethod
    def _resolve(
        job: _Job | _StepJob,
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
