"""Fixtures of the streaming_parser tests."""

from __future__ import annotations

import pytest

from streaming_parser import VocabLayout
from tests.streaming_parser.support import LAYOUT


@pytest.fixture
def layout() -> VocabLayout:
    """The default Step-Audio-2 layout."""
    return LAYOUT
