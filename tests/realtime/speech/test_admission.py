"""Decoder admission from a fake cost model: admit, queue, refuse, never revoke a speaking stream."""

from __future__ import annotations

import asyncio

import pytest

from realtime.metrics import Metrics
from realtime.speech.admission import START_WINDOW_S, DecoderAdmission


class Clock:
    """Monotonic seconds the test moves; `settle` ends every stream's start-up window."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def settle(self) -> None:
        self.now += START_WINDOW_S + 0.01


def _settled_gate(limit: int, capacity: object = None, **kwargs: object) -> tuple[DecoderAdmission, Clock]:
    clock = Clock()
    gate = DecoderAdmission(limit, capacity, clock=clock, start_extra=1.0, **kwargs)  # type: ignore[arg-type]
    return gate, clock


async def _admit_settled(gate: DecoderAdmission, clock: Clock, count: int) -> None:
    """Admit ``count`` streams one after another, each past its start-up window before the next."""
    for _ in range(count):
        assert await gate.acquire(0.0)
        clock.settle()


class FakeCapacity:
    """Audio seconds per second the decoder serves with N streams: ``per_stream_gain`` more per stream up to
    ``plateau`` (batching pays), settable by the test (the cost model re-measures)."""

    def __init__(self, plateau: float, per_stream_gain: float = 0.0) -> None:
        self.plateau = plateau
        self.gain = per_stream_gain
        self.asked: list[int] = []

    def __call__(self, streams: int) -> float | None:
        self.asked.append(streams)
        return min(self.plateau, 1.0 + self.gain * (streams - 1)) if self.gain else self.plateau


def _metric(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_admits_within_capacity_with_headroom_then_refuses_after_the_wait() -> None:
    capacity = FakeCapacity(plateau=11.0)
    metrics = Metrics()
    gate, clock = _settled_gate(100, capacity, headroom=0.2, metrics=metrics)
    # room is 11 x (1 - 0.2) = 8.8 audio s/s; a stream counts 2 while it starts, 1 once settled
    await _admit_settled(gate, clock, 6)  # the 6th: 5 + 2 = 7 <= 8.8
    assert await gate.acquire(0.0)  # the 7th: 6 + 2 (starting) = 8 <= 8.8
    assert not gate.has_room()  # an 8th now: 7 + 2 (the 7th starting) + 2 = 11 > 8.8
    clock.settle()
    assert not gate.has_room()  # settled: 7 + 2 = 9 > 8.8 still
    assert gate.live == 7
    assert not await asyncio.wait_for(gate.acquire(0.05), 5)  # refused once its wait is over (real time)
    assert gate.live == 7 and gate.refused == 1 and gate.admitted == 7
    assert _metric(metrics, "streamvoice_decoder_refusals_total") == 1
    assert _metric(metrics, "streamvoice_decoder_streams") == 7
    assert _metric(metrics, "streamvoice_decoder_capacity_audio_seconds_per_second") == 11.0
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_count") == 7


async def test_answers_starting_together_count_double_until_their_first_chunks_are_out() -> None:
    """A burst of simultaneous starts is paced: the start-up window makes each count more (2 audio s/s here)."""
    clock = Clock()
    gate = DecoderAdmission(100, FakeCapacity(plateau=10.0), headroom=0.0, clock=clock, start_extra=1.0)
    admitted = 0
    while gate.has_room():
        assert await gate.acquire(0.0)
        admitted += 1
    assert admitted == 5 and gate.starting == 5  # 5 x 2 = 10
    clock.settle()
    assert gate.starting == 0
    admitted = 0
    while gate.has_room():
        assert await gate.acquire(0.0)
        admitted += 1
    assert admitted == 2 and gate.live == 7  # 5 + 2 x 2 = 9; a third would need 11


async def test_the_capacity_at_the_batch_size_the_load_would_run_in() -> None:
    """Batching raises capacity with the number of streams: admission asks at live + 1."""
    capacity = FakeCapacity(plateau=20.0, per_stream_gain=2.0)  # n streams: 1 + 2 (n - 1) audio s/s
    gate, clock = _settled_gate(100, capacity, headroom=0.0)
    admitted = 0
    while gate.has_room():
        assert await gate.acquire(0.0)
        clock.settle()
        admitted += 1
    # settled L streams + a starting one (counted 2): L + 2 <= min(20, 1 + 2 L) for L in 1..18
    assert admitted == 19
    assert capacity.asked[-1] == 20


async def test_memory_slots_are_folded_in() -> None:
    gate = DecoderAdmission(2, FakeCapacity(plateau=100.0))
    assert await gate.acquire(0.0) and await gate.acquire(0.0)
    assert not await gate.acquire(0.02)  # real-time room, but no memory slot


async def test_the_first_stream_is_always_admitted() -> None:
    """A decoder slower than real time still serves one listener as well as it can."""
    gate = DecoderAdmission(4, FakeCapacity(plateau=0.5))
    assert await gate.acquire(0.0)
    assert not await gate.acquire(0.02)


async def test_unmeasured_capacity_leaves_memory_to_decide() -> None:
    gate = DecoderAdmission(3, lambda streams: None)
    assert all([await gate.acquire(0.0) for _ in range(3)])
    assert not await gate.acquire(0.0)


async def test_a_queued_answer_starts_when_a_stream_ends_first_come_first_served() -> None:
    metrics = Metrics()
    # room for 2 settled streams: 1 + 2 (a starting one) = 3 <= 3.75 x 0.8... = 3.0; 2 + 2 = 4 > 3.0
    gate, clock = _settled_gate(100, FakeCapacity(plateau=3.75), headroom=0.2, metrics=metrics)
    await _admit_settled(gate, clock, 2)
    first = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    assert gate.waiting == 2 and gate.saturated
    assert _metric(metrics, "streamvoice_admission_waiting", {"resource": "decoder"}) == 2
    gate.release()
    assert await asyncio.wait_for(first, 1.0)
    assert not second.done() and gate.live == 2
    clock.settle()
    gate.release()
    assert await asyncio.wait_for(second, 1.0)
    assert gate.waiting == 0 and not gate.saturated
    assert _metric(metrics, "streamvoice_admission_waiting", {"resource": "decoder"}) == 0
    # two were admitted at once, two after a wait: all four queue times are in the histogram
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_bucket", {"le": "0.0"}) == 2
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_count") == 4


async def test_a_newcomer_does_not_jump_the_line() -> None:
    gate = DecoderAdmission(100, FakeCapacity(plateau=1.0), headroom=0.0, start_extra=1.0)
    assert await gate.acquire(0.0)
    waiting = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    gate.release()  # room for one: the waiter's
    assert not await gate.acquire(0.0)  # the newcomer finds the line served first
    assert await waiting


async def test_a_capacity_rise_lets_the_line_move_without_a_release() -> None:
    """The cost model is re-measured on every batch: a waiting answer re-reads it."""
    capacity = FakeCapacity(plateau=1.0)
    gate, clock = _settled_gate(100, capacity, headroom=0.0)
    await _admit_settled(gate, clock, 1)
    waiting = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    capacity.plateau = 3.0  # 1 + 2 (starting) = 3
    assert await asyncio.wait_for(waiting, 1.0)
    assert gate.live == 2


async def test_a_speaking_stream_is_never_revoked_when_the_capacity_falls() -> None:
    capacity = FakeCapacity(plateau=5.0)
    gate, clock = _settled_gate(100, capacity, headroom=0.0)
    await _admit_settled(gate, clock, 4)  # 3 + 2 = 5
    capacity.plateau = 1.0  # the machine got busy: nothing new starts, nothing running is stopped
    assert not await gate.acquire(0.02)
    assert gate.live == 4
    for _ in range(3):
        gate.release()
    assert not gate.has_room()  # 1 + 2 would need 3 audio s/s of a decoder serving 1
    gate.release()
    assert await gate.acquire(0.0)  # an idle decoder always takes one


async def test_a_cancelled_waiter_leaves_the_line_and_a_handed_stream_is_passed_on() -> None:
    gate = DecoderAdmission(1)
    assert await gate.acquire(0.0)
    waiter = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0 and gate.live == 1
    gate.release()
    assert gate.live == 0 and await gate.acquire(0.0)


def test_bounds() -> None:
    with pytest.raises(ValueError):
        DecoderAdmission(0)
    with pytest.raises(ValueError):
        DecoderAdmission(1, headroom=1.0)
