"""Property-based fuzzing of one live session with hostile frames (bounded to a few thousand cases).

Each case sends one to four frames (random JSON, mutated valid events, bad base64, binary frames, deep
nesting, valid events in odd orders), then a probe that must come back as its own ``error``. Whatever came in
between must hold: no ``internal_error``, no traceback, no message longer than the cap, and the socket stays
open (the probe proves it). The session is one long connection, so state left by earlier cases (responses in
flight, items, a changed format) is part of what later cases meet.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.errors import MAX_MESSAGE_CHARS
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

CASES = int(os.environ.get("STREAMVOICE_FUZZ_CASES", "1000"))  # a few thousand: set the variable
_TEXT_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
TEMPLATES: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}},
    {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}},
    {"type": "session.update", "session": {"voice": "default", "input_audio_format": "g711_ulaw"}},
    {
        "type": "session.update",
        "session": {"modalities": ["text"], "turn_detection": {"silence_duration_ms": 9}},
    },
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": _TEXT_ITEM},
    {"type": "conversation.item.create", "previous_item_id": "root", "item": {**_TEXT_ITEM, "id": "item_a"}},
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c", "output": "1"},
    },
    {"type": "conversation.item.retrieve", "item_id": "item_a"},
    {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 10},
    {"type": "conversation.item.delete", "item_id": "item_a"},
    {"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"]}},
    {
        "type": "response.create",
        "response": {"instructions": "x", "input": [{"type": "item_reference", "id": "i"}]},
    },
    {"type": "response.create", "response": {"modalities": ["text"], "voice": "default", "temperature": 0.7}},
    {"type": "response.cancel"},
    {"type": "output_audio_buffer.clear"},
]

# Lone UTF-16 surrogates (json.dumps escapes them as \\udXXX): valid JSON, but no string UTF-8 can encode.
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | SURROGATES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _mutate(event: dict[str, Any], rng: random.Random, value: Any) -> dict[str, Any]:
    """Replace, delete or add one field somewhere inside a copy of ``event``."""
    event = copy.deepcopy(event)
    node: Any = event
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = rng.choice(keys)
        child = node[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.6:
            node = child
            continue
        action = rng.random()
        if action < 0.6:
            node[key] = value
        elif action < 0.8 and isinstance(node, dict) and key != "type":
            del node[key]
        elif isinstance(node, dict):
            node[rng.choice(["extra", "type", "event_id", "id", "audio", "session"])] = value
        break
    return event


@st.composite
def hostile_frame(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["json", "mutated", "mutated", "valid", "base64", "binary", "deep", "raw"]))
    if kind == "json":
        return json.dumps(draw(JSON))
    if kind == "raw":
        return draw(st.text(max_size=40))
    if kind == "binary":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.integers(min_value=60, max_value=5000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + "1" + closer * depth
        return '{"type": "session.update", "session": ' + inner + "}"
    if kind == "base64":
        audio = draw(
            st.text(max_size=40) | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())
        )
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    template = draw(st.sampled_from(TEMPLATES))
    if kind == "valid":
        return json.dumps(template)
    rng = draw(st.randoms(use_true_random=False))
    return json.dumps(_mutate(template, rng, draw(JSON)))


class _Session:
    """One fuzzed connection with a probe counter (driven from a private event loop)."""

    def __init__(self, server: ServerHandle) -> None:
        self.runner = asyncio.Runner()
        self.client: RawClient = self.runner.run(RawClient.connect(server.ws_url()))
        self.probes = 0
        self.seen: dict[str, int] = {}

    def exchange(self, frames: list[str | bytes]) -> list[dict[str, Any]]:
        self.probes += 1
        return self.runner.run(self._exchange(frames, f"probe_{self.probes}"))

    async def _exchange(self, frames: list[str | bytes], probe: str) -> list[dict[str, Any]]:
        for frame in frames:
            await self.client.send_raw(frame)
        await self.client.send({"type": "fuzz.probe", "event_id": probe})
        events = []
        while True:
            event = await self.client.recv()
            events.append(event)
            if event["type"] == "error" and event["error"].get("event_id") == probe:
                return events

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()


def _rss_mb(server: ServerHandle) -> float:
    with urllib.request.urlopen(server.http_url("/health"), timeout=10) as reply:
        return float(json.loads(reply.read())["rss_bytes"]) / 2**20


@pytest.fixture(scope="module")
def fuzzed(server: ServerHandle) -> Iterator[_Session]:
    before = _rss_mb(server)
    session = _Session(server)
    yield session
    session.close()
    print(
        f"fuzz: {session.probes} cases, events {session.seen}, server RSS {before:.0f} -> {_rss_mb(server):.0f} MB"
    )
    assert session.probes >= CASES  # every case ran and its probe was answered


@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(hostile_frame(), min_size=1, max_size=4))
def test_hostile_frames_get_precise_errors_and_the_session_survives(
    fuzzed: _Session, frames: list[str | bytes]
) -> None:
    for event in fuzzed.exchange(frames):
        fuzzed.seen[event["type"]] = fuzzed.seen.get(event["type"], 0) + 1
        if event["type"] != "error":
            continue
        error = event["error"]
        assert error["code"] != "internal_error", (frames, error)
        assert "Traceback" not in error["message"]
        assert len(error["message"]) <= MAX_MESSAGE_CHARS + 3
