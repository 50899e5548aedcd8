"""In-process session fixtures (tests/support/session_harness.py): no server, no socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from realtime.speech.runtime import Runtime
from tests.support.session_harness import light_runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    """A light runtime (schedule-double decoder, synthetic LLM) for sessions served over a fake transport."""
    async with light_runtime() as rt:
        yield rt
