"""Decoder admission from a fake cost model: admit, queue, refuse, never revoke a speaking stream."""

from __future__ import annotations

import asyncio

import pytest

from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission


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
    capacity = FakeCapacity(plateau=10.0)
    metrics = Metrics()
    gate = DecoderAdmission(100, capacity, headroom=0.2, metrics=metrics)
    for _ in range(8):  # 8 <= 10 x (1 - 0.2)
        assert await gate.acquire(0.0)
    assert gate.live == 8 and not gate.has_room()
    assert not await gate.acquire(0.05)  # a 9th would need 9 > 8 audio s/s: refused after its wait
    assert gate.live == 8 and gate.refused == 1 and gate.admitted == 8
    assert _metric(metrics, "streamvoice_decoder_refusals_total") == 1
    assert _metric(metrics, "streamvoice_decoder_streams") == 8
    assert _metric(metrics, "streamvoice_decoder_capacity_audio_seconds_per_second") == 10.0
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_count") == 8


async def test_the_capacity_at_the_batch_size_the_load_would_run_in() -> None:
    """Batching raises capacity with the number of streams: admission asks at live + 1."""
    capacity = FakeCapacity(plateau=20.0, per_stream_gain=1.5)  # n streams: 1 + 1.5 (n - 1) audio s/s
    gate = DecoderAdmission(100, capacity, headroom=0.0)
    admitted = 0
    while await gate.acquire(0.0):
        admitted += 1
    # n <= 1 + 1.5 (n - 1) holds for every n until the plateau: n <= 20
    assert admitted == 20
    assert capacity.asked[-1] == 21


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
    gate = DecoderAdmission(100, FakeCapacity(plateau=2.5), headroom=0.2, metrics=metrics)  # room for 2
    assert await gate.acquire(0.0) and await gate.acquire(0.0)
    first = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    assert gate.waiting == 2 and gate.saturated
    assert _metric(metrics, "streamvoice_admission_waiting", {"resource": "decoder"}) == 2
    gate.release()
    assert await asyncio.wait_for(first, 1.0)
    assert not second.done() and gate.live == 2
    gate.release()
    assert await asyncio.wait_for(second, 1.0)
    assert gate.waiting == 0 and not gate.saturated
    assert _metric(metrics, "streamvoice_admission_waiting", {"resource": "decoder"}) == 0
    # two were admitted at once, two after a wait: all four queue times are in the histogram
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_bucket", {"le": "0.0"}) == 2
    assert _metric(metrics, "streamvoice_decoder_queue_seconds_count") == 4


async def test_a_newcomer_does_not_jump_the_line() -> None:
    gate = DecoderAdmission(100, FakeCapacity(plateau=1.0), headroom=0.0)
    assert await gate.acquire(0.0)
    waiting = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    gate.release()  # room for one: the waiter's
    assert not await gate.acquire(0.0)  # the newcomer finds the line served first
    assert await waiting


async def test_a_capacity_rise_lets_the_line_move_without_a_release() -> None:
    """The cost model is re-measured on every batch: a waiting answer re-reads it."""
    capacity = FakeCapacity(plateau=1.0)
    gate = DecoderAdmission(100, capacity, headroom=0.0)
    assert await gate.acquire(0.0)
    waiting = asyncio.create_task(gate.acquire(5.0))
    await asyncio.sleep(0.01)
    capacity.plateau = 2.0
    assert await asyncio.wait_for(waiting, 1.0)
    assert gate.live == 2


async def test_a_speaking_stream_is_never_revoked_when_the_capacity_falls() -> None:
    capacity = FakeCapacity(plateau=4.0)
    gate = DecoderAdmission(100, capacity, headroom=0.0)
    for _ in range(4):
        assert await gate.acquire(0.0)
    capacity.plateau = 1.0  # the machine got busy: nothing new starts, nothing running is stopped
    assert not await gate.acquire(0.02)
    assert gate.live == 4
    for _ in range(3):
        gate.release()
    assert not gate.has_room()  # 2 streams would need 2 audio s/s of a decoder serving 1
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
