"""The worker's decode cost model: per-step cost by batch size, batch sizing, capacity, thread-safety."""

from __future__ import annotations

import threading

import pytest

from realtime.speech.cost_model import DecodeCostModel


def test_nothing_measured_yet() -> None:
    model = DecodeCostModel()
    assert model.step_seconds(4) is None
    assert model.batch_seconds(4) is None
    assert model.largest_batch(1.0, 16) == 1  # one step teaches the estimate
    assert model.audio_seconds_per_second(1, 24_000) is None
    snapshot = model.snapshot()
    assert snapshot.step_seconds == {} and snapshot.audio_samples_per_step is None


def test_per_step_cost_by_batch_size_is_smoothed_per_size() -> None:
    model = DecodeCostModel(smoothing=0.5)
    model.observe(1, 0.2, 24_000)  # one step of 0.2 s making 1 s of audio
    model.observe(4, 0.4, 4 * 24_000)  # four steps in 0.4 s: 0.1 s per step
    assert model.step_seconds(1) == pytest.approx(0.2)
    assert model.step_seconds(4) == pytest.approx(0.1)
    model.observe(4, 0.8, 4 * 24_000)  # 0.2 s per step, half-weighted
    assert model.step_seconds(4) == pytest.approx(0.15)
    assert model.batch_seconds(4) == pytest.approx(0.6)
    # Unmeasured sizes take the nearest measured one (the smaller on a tie).
    assert model.step_seconds(2) == pytest.approx(0.2)
    assert model.step_seconds(3) == pytest.approx(0.15)
    assert model.step_seconds(16) == pytest.approx(0.15)
    assert model.snapshot().batches == {1: 1, 4: 2}


def test_largest_batch_fits_the_budget() -> None:
    model = DecodeCostModel()
    model.observe(1, 0.05, 0)
    assert model.largest_batch(0.12, 16) == 2  # 2 x 0.05 fits, 3 x 0.05 does not
    assert model.largest_batch(10.0, 16) == 16
    assert model.largest_batch(0.01, 16) == 1  # never below one step


def test_capacity_in_audio_seconds_per_second() -> None:
    model = DecodeCostModel()
    model.observe(4, 1.0, 4 * 24_000)  # 0.25 s per step, 1 s of audio per step
    assert model.audio_seconds_per_second(4, 24_000) == pytest.approx(4.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        DecodeCostModel(smoothing=0.0)
    with pytest.raises(ValueError):
        DecodeCostModel().observe(0, 1.0, 0)


def test_observed_on_one_thread_read_on_another() -> None:
    model = DecodeCostModel()
    done = threading.Event()

    def writer() -> None:
        for i in range(2000):
            model.observe(1 + i % 8, 0.1, 2400)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        snapshot = model.snapshot()
        assert all(v == pytest.approx(0.1 / size) for size, v in snapshot.step_seconds.items())
    thread.join()
    assert sum(model.snapshot().batches.values()) == 2000
