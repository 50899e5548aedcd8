"""`AdmissionSlot`: HTTP replies share the Realtime session cap and the SIGTERM drain."""

from __future__ import annotations

import pytest

from realtime.errors import CODE_SESSION_LIMIT, CODE_SHUTTING_DOWN
from realtime.http.errors import HTTPError
from realtime.http.realtime_ws import SessionCount
from realtime.http.streaming import AdmissionSlot


async def test_a_full_server_refuses_and_a_release_admits_again() -> None:
    sessions = SessionCount(limit=1)
    slot = AdmissionSlot(sessions)
    assert sessions.open == 1 and not sessions.none_open.is_set()
    with pytest.raises(HTTPError) as caught:
        AdmissionSlot(sessions)
    assert (caught.value.status, caught.value.code) == (503, CODE_SESSION_LIMIT)
    slot.release()
    slot.release()  # idempotent: the count never goes below zero
    assert sessions.open == 0 and sessions.none_open.is_set()
    AdmissionSlot(sessions).release()


async def test_a_drain_waits_for_running_replies_and_refuses_new_ones() -> None:
    sessions = SessionCount(limit=4)
    running = AdmissionSlot(sessions)
    sessions.start_drain(5.0)
    assert not sessions.none_open.is_set()  # the drain waits for the running reply
    with pytest.raises(HTTPError) as caught:
        AdmissionSlot(sessions)
    assert (caught.value.status, caught.value.code) == (503, CODE_SHUTTING_DOWN)
    running.release()
    assert sessions.none_open.is_set()
