"""The key store (realtime/http/keys.py): who a key is, how long an ephemeral key lives, and the store's bounds."""

from __future__ import annotations

import re

import pytest

from realtime.http import keys as keys_module
from realtime.http.keys import Grant, KeyRefused, Keys, Refusal, refusal_message
from realtime.wire.session_config import SessionConfig

SERVER_KEY = "sk-server"
PRESET = SessionConfig(model="m", voice="v", instructions="Speak like a pirate.")


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _keys(server_key: str | None = SERVER_KEY, capacity: int = 8) -> tuple[Keys, ManualClock]:
    clock = ManualClock()
    return Keys(server_key, capacity=capacity, clock=clock, wall=lambda: 1_700_000_000.0), clock


def _refusal(call: object) -> Refusal:
    with pytest.raises(KeyRefused) as refused:
        call()  # type: ignore[operator]
    return refused.value.reason


def test_a_minted_key_looks_like_openais_and_carries_its_session() -> None:
    keys, _ = _keys()
    value, expires_at = keys.mint(600, PRESET)
    assert re.fullmatch(r"ek_[0-9a-f]{32}", value)
    assert expires_at == 1_700_000_600
    assert keys.verify_for_realtime(value) == Grant(ephemeral=True, session=PRESET)
    # not single-use: OpenAI's keys open sessions until they expire
    assert keys.verify_for_realtime(value) == Grant(ephemeral=True, session=PRESET)
    assert keys.mint(600, None)[0] != value


def test_the_server_key_opens_realtime_with_the_defaults() -> None:
    keys, _ = _keys()
    assert keys.verify_for_realtime(SERVER_KEY) == Grant()
    assert _refusal(lambda: keys.verify_for_realtime(None)) is Refusal.MISSING
    assert _refusal(lambda: keys.verify_for_realtime("sk-wrong")) is Refusal.WRONG


def test_an_expired_key_is_refused_and_purged() -> None:
    keys, clock = _keys()
    value, _ = keys.mint(10, None)
    clock.now += 9.9
    assert keys.verify_for_realtime(value).ephemeral
    clock.now += 0.1
    assert _refusal(lambda: keys.verify_for_realtime(value)) is Refusal.EPHEMERAL_UNKNOWN
    assert len(keys) == 0


def test_unknown_ephemeral_keys_are_refused_even_on_an_open_server() -> None:
    keys, _ = _keys(server_key=None)
    assert keys.verify_for_realtime("anything") == Grant()
    assert keys.verify_for_realtime(None) == Grant()
    assert _refusal(lambda: keys.verify_for_realtime("ek_" + "0" * 32)) is Refusal.EPHEMERAL_UNKNOWN
    value, _ = keys.mint(60, PRESET)
    assert keys.verify_for_realtime(value).session == PRESET


def test_ephemeral_keys_open_nothing_but_realtime() -> None:
    keys, _ = _keys()
    value, _ = keys.mint(60, None)
    keys.check_server_key(SERVER_KEY)
    assert _refusal(lambda: keys.check_server_key(value)) is Refusal.EPHEMERAL_ELSEWHERE
    assert _refusal(lambda: keys.check_server_key(None)) is Refusal.MISSING
    assert _refusal(lambda: keys.check_server_key("sk-wrong")) is Refusal.WRONG
    open_server, _ = _keys(server_key=None)
    open_server.check_server_key(None)  # an open server is open to every client


def test_a_full_store_purges_expired_keys_first_then_drops_the_oldest() -> None:
    keys, clock = _keys(capacity=3)
    keys.mint(10, None)  # expires first
    first, _ = keys.mint(600, None)
    second, _ = keys.mint(600, None)
    clock.now += 11  # `short` expired: the next mint purges it and keeps both live keys
    third, _ = keys.mint(600, None)
    assert len(keys) == 3 and keys.verify_for_realtime(first).ephemeral
    fourth, _ = keys.mint(600, None)  # full of live keys: the oldest goes
    assert len(keys) == 3
    assert _refusal(lambda: keys.verify_for_realtime(first)) is Refusal.EPHEMERAL_UNKNOWN
    for live in (second, third, fourth):
        assert keys.verify_for_realtime(live).ephemeral


def test_bound_configurations_are_held_under_a_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "STORE_BYTES", 3 * (1000 + keys_module.KEY_OVERHEAD_BYTES))
    keys, _ = _keys(capacity=100)
    minted = [keys.mint(600, PRESET, size=1000)[0] for _ in range(4)]
    assert len(keys) == 3
    assert _refusal(lambda: keys.verify_for_realtime(minted[0])) is Refusal.EPHEMERAL_UNKNOWN
    assert all(keys.verify_for_realtime(value).ephemeral for value in minted[1:])


def test_the_demos_keys_cannot_crowd_out_an_applications() -> None:
    keys, _ = _keys(capacity=2)
    app_key, _ = keys.mint(600, PRESET)
    demo_keys = [keys.mint(60, None, demo=True)[0] for _ in range(5)]  # an open demo, flooded
    assert keys.verify_for_realtime(app_key).session == PRESET
    assert len(keys) == 3 and keys.verify_for_realtime(demo_keys[-1]).ephemeral
    assert _refusal(lambda: keys.verify_for_realtime(demo_keys[0])) is Refusal.EPHEMERAL_UNKNOWN


def test_keys_are_held_as_digests_only() -> None:
    keys, _ = _keys()
    value, _ = keys.mint(600, None)
    held = repr(vars(keys)) + repr(vars(vars(keys)["_minted"]))
    assert value not in held and value[3:] not in held


@pytest.mark.parametrize("reason", list(Refusal))
@pytest.mark.parametrize("websocket", [False, True])
def test_refusal_messages_say_what_to_do_without_repeating_a_key(reason: Refusal, websocket: bool) -> None:
    message = refusal_message(reason, websocket=websocket)
    assert "<key>" in message or "client_secrets" in message
    assert ("openai-insecure-api-key" in message) == (websocket and reason is not Refusal.EPHEMERAL_UNKNOWN)
