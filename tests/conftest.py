"""Session-wide test settings. Area fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
REFERENCE_TINY = DATA_DIR / "reference_tiny"

# Two cores on CI: keep torch from oversubscribing when tests run servers in threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: small vectors and weights copied from the reference, so a clone tests standalone."""
    return DATA_DIR


@pytest.fixture(scope="session")
def reference_tiny_dir() -> Path:
    """The tiny random-weight Token2Wav oracle (weights, inputs, expected outputs)."""
    return REFERENCE_TINY
