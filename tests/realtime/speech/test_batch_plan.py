"""The scheduler's batch choice: first chunks first and alone, steady batches bounded by time and slack."""

from __future__ import annotations

from realtime.speech.batch_plan import BatchLimits, Waiting, plan_batch
from realtime.speech.cost_model import DecodeCostModel

NOW = 1000.0


def _cost(per_step: float = 0.05) -> DecodeCostModel:
    model = DecodeCostModel(smoothing=1.0)
    for size in range(1, 17):
        model.observe(size, per_step * size, 1000 * size)  # linear: 50 ms per step at any size
    return model


def _steady(name: str, slack: float, order: int = 0) -> Waiting[str]:
    return Waiting(name, name, True, NOW + slack, order)


def _first(name: str, order: int = 0) -> Waiting[str]:
    return Waiting(name, name, False, NOW, order)


LIMITS = BatchLimits(max_batch=16, batch_seconds=0.4, starting_budget_s=0.1)


def test_a_first_chunk_runs_alone_when_the_steady_streams_have_slack() -> None:
    waiting = [_steady("a", 2.0), _steady("b", 3.0), _first("new")]
    batch, rest = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert batch == ["new"]
    assert rest == ["a", "b"]


def test_a_steady_stream_about_to_run_dry_joins_the_first_chunk() -> None:
    # "a" has 0.15 s of audio left: under two batches of 2 steps (0.2 s), so it cannot wait for the next turn
    waiting = [_steady("a", 0.15), _steady("b", 3.0), _first("new")]
    batch, rest = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert batch == ["new", "a"]
    assert rest == ["b"]


def test_several_first_chunks_share_a_batch_within_the_time_budget() -> None:
    waiting = [_first(f"n{i}", order=i) for i in range(12)]
    batch, rest = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert batch == [f"n{i}" for i in range(8)]  # 8 x 50 ms = 0.4 s
    assert len(rest) == 4


def test_a_steady_batch_ends_before_its_most_urgent_listener_runs_dry() -> None:
    waiting = [_steady(f"s{i}", 0.2 + i, order=i) for i in range(10)]
    batch, _ = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert batch == ["s0", "s1", "s2", "s3"]  # 0.2 s of slack: 4 steps of 50 ms


def test_a_late_stream_gets_the_full_batch_budget() -> None:
    """Already behind: the largest batch within the time budget serves everyone soonest."""
    waiting = [_steady(f"s{i}", -0.5 + i, order=i) for i in range(10)]
    batch, _ = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert len(batch) == 8


def test_while_a_response_starts_steady_batches_stay_short() -> None:
    waiting = [_steady(f"s{i}", 5.0 + i, order=i) for i in range(10)]
    batch, _ = plan_batch(waiting, _cost(), LIMITS, NOW, starting=True)
    assert len(batch) == 2  # 0.1 s
    batch, _ = plan_batch(waiting, _cost(), LIMITS, NOW, starting=False)
    assert len(batch) == 8


def test_one_step_per_stream_and_nothing_before_any_measurement() -> None:
    waiting = [_steady("a", 1.0, 0), Waiting("a2", "a", True, NOW + 1.5, 1), _steady("b", 2.0, 2)]
    batch, rest = plan_batch(waiting, DecodeCostModel(), LIMITS, NOW)
    assert batch == ["a"]  # nothing measured: one step teaches the estimate
    batch, rest = plan_batch(waiting, _cost(), LIMITS, NOW)
    assert batch == ["a", "b"] and rest == ["a2"]
    assert plan_batch([], _cost(), LIMITS, NOW) == ([], [])


def test_no_batch_outlasts_a_ramping_stream_whose_next_step_is_on_its_way() -> None:
    """A stream in its first chunks (its next codes still arriving) bounds every batch by its slack."""
    steady = [_steady(f"s{i}", 5.0 + i, order=i) for i in range(10)]
    # its listener runs dry in 0.25 s and its own step (50 ms) must still run after this batch: 0.2 s
    batch, _ = plan_batch(steady, _cost(), LIMITS, NOW, upcoming=[NOW + 0.25])
    assert len(batch) == 4
    first = [_first(f"n{i}", order=i) for i in range(10)]
    batch, _ = plan_batch(first, _cost(), LIMITS, NOW, upcoming=[NOW + 0.25])
    assert len(batch) == 4
    batch, _ = plan_batch(first, _cost(), LIMITS, NOW, upcoming=[NOW - 1.0])  # late already: full budget
    assert len(batch) == 8


def test_first_chunks_starting_together_are_staggered() -> None:
    limits = BatchLimits(max_batch=16, batch_seconds=0.4, starting_budget_s=0.05, first_chunk_seconds=0.1)
    first = [_first(f"n{i}", order=i) for i in range(6)]
    batch, rest = plan_batch(first, _cost(), limits, NOW)
    assert batch == ["n0", "n1"] and len(rest) == 4  # 0.1 s: two first chunks of 50 ms
