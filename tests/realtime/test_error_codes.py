"""Every refusal the Realtime server can send, provoked over a real socket: OpenAI's code, type and param.

One case per row of the refusal table in docs/PROTOCOL.md §8.3; `test_the_table_and_the_cases_agree` keeps
the two in step (a row without a case, or a case whose expectation differs from its row, fails). Each case
sends the offending event with an ``event_id`` and the check asserts it comes back in ``error.event_id``
(refusals of a frame that could not be read, or of the connection itself, have none to echo).

Real clients end their session on an error code they do not expect (pipecat on everything but two codes),
so the codes matter as much as the refusals: docs/PROTOCOL.md §8.

Size: over 400 lines because it holds one case per row of a 60-row table; the cases share the helpers above
them and differ only in how each refusal is provoked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

from realtime.config import ServerConfig
from tests.realtime.conftest import (
    APP_EXPIRING,
    APP_KEYED,
    APP_LIMITED,
    SECOND_VOICE,
    SLOW_TOKENS_PER_SECOND,
)
from tests.support.server_harness import ServerHandle, configured_app, start_server
from tests.support.wire_check import RawClient, validate_frame

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
USER_TEXT = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
PUSH_TO_TALK = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
EVENT_ID = "evt_provoke"
NULL = "null"  # how the table writes a null code or param

# the small server's apps (see `small`)
APP_FEW_ITEMS = 0  # at most 2 items
APP_ONE_STREAM = 1  # one decoder stream, refused after a short wait; one out-of-band response


@pytest.fixture(scope="module")
def small(t2w_cache: Path) -> Iterator[ServerHandle]:
    """A server with tight caps, for the refusals of our own limits."""
    config = ServerConfig(
        backend="synthetic",
        synthetic_tokens_per_second=SLOW_TOKENS_PER_SECOND,
        cache_dir=t2w_cache,
        max_decoder_streams=1,
        decoder_wait_seconds=0.2,
        max_out_of_band_responses=1,
    )
    handle = start_server(config, [configured_app(max_conversation_items=2), configured_app()])
    yield handle
    handle.stop()


@dataclass
class Probe:
    """What a case gives the check: the error object, and whether the provoking event carried `EVENT_ID`."""

    error: dict[str, Any]
    echoes_event_id: bool = True


Case = Callable[[ServerHandle, ServerHandle], Awaitable[Probe]]


async def _connect(server: ServerHandle, index: int = 0, *, beta: bool = False, query: str = "") -> RawClient:
    if query:
        return await RawClient.connect(server.ws_url(index=index), beta=beta, query=query)
    return await RawClient.connect(server.ws_url(index=index), beta=beta)


async def _refused(client: RawClient, event: dict[str, Any], *, before: str | None = None) -> Probe:
    """Send ``event`` (with `EVENT_ID`), skip events up to the ``error``, prove the session lives on."""
    await client.send({**event, "event_id": EVENT_ID})
    while True:
        received = await client.recv()
        if received["type"] == "error":
            break
        assert before is None or received["type"] != before, received
    await client.alive()
    return Probe(received["error"])


async def _one(
    server: ServerHandle, event: dict[str, Any], *, beta: bool = False, setup: Any = (), query: str = ""
) -> Probe:
    client = await _connect(server, beta=beta, query=query)
    try:
        for step in setup:
            await client.send(step)
            await client.recv()
        return await _refused(client, event)
    finally:
        await client.close()


async def _raw_frame(server: ServerHandle, frame: str | bytes) -> Probe:
    client = await _connect(server)
    try:
        await client.send_raw(frame)
        error = (await client.recv())["error"]
        await client.alive()
        return Probe(error, echoes_event_id=False)
    finally:
        await client.close()


def _session(**fields: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **fields}}


async def _spoken_reply(client: RawClient) -> str:
    """Create a user item and a spoken response; return the assistant item's id once it is done."""
    await client.send({"type": "conversation.item.create", "item": USER_TEXT})
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    return next(e["item"]["id"] for e in events if e["type"] == "response.output_item.done")


async def _truncate_beyond(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        item_id = await _spoken_reply(client)
        event = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
        return await _refused(client, {**event, "audio_end_ms": 10_000_000})
    finally:
        await client.close()


async def _truncate_text_item(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        await client.send({"type": "conversation.item.create", "item": {**USER_TEXT, "id": "item_text"}})
        await client.until("conversation.item.done")
        event = {"type": "conversation.item.truncate", "item_id": "item_text", "content_index": 0}
        return await _refused(client, {**event, "audio_end_ms": 0})
    finally:
        await client.close()


async def _truncate_content_index(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        item_id = await _spoken_reply(client)
        event = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 1}
        return await _refused(client, {**event, "audio_end_ms": 0})
    finally:
        await client.close()


async def _delete_running(_: ServerHandle, small: ServerHandle) -> Probe:
    client = await _connect(small, APP_ONE_STREAM)
    try:
        await client.send({"type": "conversation.item.create", "item": USER_TEXT})
        await client.send({"type": "response.create"})
        events = await client.until("response.output_item.added")
        item_id = events[-1]["item"]["id"]
        await client.send({"type": "conversation.item.delete", "item_id": item_id, "event_id": EVENT_ID})
        error = (await client.until("error"))[-1]["error"]
        await client.send({"type": "response.cancel"})
        await client.until("response.done")
        await client.alive()
        return Probe(error)
    finally:
        await client.close()


async def _duplicate_id(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        await client.send({"type": "conversation.item.create", "item": {**USER_TEXT, "id": "item_twice"}})
        await client.until("conversation.item.done")
        return await _refused(
            client, {"type": "conversation.item.create", "item": {**USER_TEXT, "id": "item_twice"}}
        )
    finally:
        await client.close()


async def _voice_after_audio(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        await _spoken_reply(client)
        return await _refused(client, _session(audio={"output": {"voice": SECOND_VOICE}}))
    finally:
        await client.close()


async def _commit_empty(server: ServerHandle, _: ServerHandle) -> Probe:
    audio = base64.b64encode(b"\x00\x00" * 1200).decode()  # 50 ms
    client = await _connect(server)
    try:
        await client.send({"type": "session.update", "session": PUSH_TO_TALK})
        await client.until("session.updated")
        await client.send({"type": "input_audio_buffer.append", "audio": audio})
        return await _refused(client, {"type": "input_audio_buffer.commit"})
    finally:
        await client.close()


async def _second_response(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        await client.send({"type": "conversation.item.create", "item": USER_TEXT})
        await client.send({"type": "response.create"})
        await client.until("response.created")
        await client.send({"type": "response.create", "event_id": EVENT_ID})
        error = (await client.until("error"))[-1]["error"]
        await client.until("response.done")
        await client.alive()
        return Probe(error)
    finally:
        await client.close()


async def _out_of_band_cap(_: ServerHandle, small: ServerHandle) -> Probe:
    client = await _connect(small, APP_ONE_STREAM)
    try:
        await client.send({"type": "response.create", "response": {"conversation": "none"}})
        await client.until("response.created")
        await client.send(
            {"type": "response.create", "event_id": EVENT_ID, "response": {"conversation": "none"}}
        )
        error = (await client.until("error"))[-1]["error"]
        await client.send({"type": "response.cancel"})
        await client.until("response.done")
        return Probe(error)
    finally:
        await client.close()


async def _decoder_capacity(_: ServerHandle, small: ServerHandle) -> Probe:
    holder, client = await _connect(small, APP_ONE_STREAM), await _connect(small, APP_ONE_STREAM)
    try:
        await holder.send({"type": "response.create"})  # holds the only decoder stream while it speaks
        await holder.until("response.output_audio.delta")
        await client.send({"type": "response.create", "event_id": EVENT_ID})
        error = (await client.until("error"))[-1]["error"]
        await holder.send({"type": "response.cancel"})
        await holder.until("response.done")
        await client.alive()
        return Probe(error)
    finally:
        await holder.close()
        await client.close()


async def _conversation_full(_: ServerHandle, small: ServerHandle) -> Probe:
    client = await _connect(small, APP_FEW_ITEMS)
    try:
        for _index in range(2):
            await client.send({"type": "conversation.item.create", "item": USER_TEXT})
            await client.until("conversation.item.done")
        return await _refused(client, {"type": "conversation.item.create", "item": USER_TEXT})
    finally:
        await client.close()


async def _buffer_full(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server)
    try:
        mu_law = {"format": {"type": "audio/pcmu"}, "turn_detection": None}  # one byte a sample at 8 kHz
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "audio": {"input": mu_law}}}
        )
        await client.until("session.updated")
        audio = base64.b64encode(bytes(8000 * 250)).decode()  # 250 s: the third passes 600 s
        for _index in range(2):
            await client.send({"type": "input_audio_buffer.append", "audio": audio})
        return await _refused(client, {"type": "input_audio_buffer.append", "audio": audio})
    finally:
        await client.close()


async def _first_frame(url: str, **options: Any) -> dict[str, Any]:
    """The first event a refused connection gets (validated), after which the server closes."""
    async with websockets.connect(url + "?model=x", **options) as ws:
        event = validate_frame(await ws.recv(), "ga")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    return event


async def _bad_key(server: ServerHandle, _: ServerHandle) -> Probe:
    event = await _first_frame(
        server.ws_url(index=APP_KEYED), additional_headers={"Authorization": "Bearer no"}
    )
    return Probe(event["error"], echoes_event_id=False)


async def _foreign_origin(server: ServerHandle, _: ServerHandle) -> Probe:
    event = await _first_frame(server.ws_url(), origin=websockets.Origin("https://evil.example"))
    return Probe(event["error"], echoes_event_id=False)


async def _full_server(server: ServerHandle, _: ServerHandle) -> Probe:
    first = await _connect(server, APP_LIMITED)
    try:
        event = await _first_frame(server.ws_url(index=APP_LIMITED))
    finally:
        await first.close()
    return Probe(event["error"], echoes_event_id=False)


async def _expired(server: ServerHandle, _: ServerHandle) -> Probe:
    client = await _connect(server, APP_EXPIRING)
    try:
        return Probe((await client.until("error"))[-1]["error"], echoes_event_id=False)
    finally:
        await client.close()


def _sent(event: dict[str, Any], **options: Any) -> Case:
    async def case(server: ServerHandle, _: ServerHandle) -> Probe:
        return await _one(server, event, **options)

    return case


def _frame(frame: str | bytes) -> Case:
    async def case(server: ServerHandle, _: ServerHandle) -> Probe:
        return await _raw_frame(server, frame)

    return case


TRUNCATE = {"type": "conversation.item.truncate", "content_index": 0, "audio_end_ms": 0}
TRANSCRIBING = "intent=transcription"  # a transcription session (docs/PROTOCOL.md §4.8)
NESTED = '{"type": "session.update", "session": ' + "[" * 70 + "]" * 70 + "}"
# row number in docs/PROTOCOL.md §8.3 -> the case that provokes it
CASES: dict[str, Case] = {
    "R1": _frame("{not json"),
    "R2": _frame("[1, 2]"),
    "R3": _frame(b"\x00\x01"),
    "R4": _sent({}),
    "R5": _sent({"type": "no.such.event"}),
    "R6": _sent({"type": "output_audio_buffer.clear"}),
    "R7": _sent({"type": "transcription_session.update", "session": {}}, query=TRANSCRIBING),
    "R8": _frame(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (16 * 1024 * 1024)})),
    "R9": _frame(NESTED),
    "R10": _sent(
        {
            "type": "conversation.item.create",
            "item": {**USER_TEXT, "content": [{"type": "input_text", "text": "\ud800"}]},
        }
    ),
    "R11": _sent({"type": "conversation.item.retrieve"}),
    "R12": _sent({"type": "session.update", "session": {"instructions": "x"}}),
    "R13": _sent(_session(voice_id="x")),
    "R14": _sent({**TRUNCATE, "item_id": "x", "audio_end_ms": "late"}),
    "R15": _sent(_session(audio={"input": {"transcription": {"model": "m", "delay": "bogus"}}})),
    "R16": _sent(_session(audio={"output": {"format": {"type": "audio/pcm", "rate": 16000}}})),
    "R17": _sent(_session(max_output_tokens=5000)),
    "R18": _sent(_session(audio={"output": {"speed": 0.1}})),
    "R19": _sent(_session(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}})),
    "R20": _sent(
        _session(tools=[{"type": "function", "name": "f", "description": "x" * 1025, "parameters": {}}])
    ),
    "R21": _sent({"type": "input_audio_buffer.append", "audio": "not base64!!"}),
    "R22": _sent({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode()}),
    "R23": _sent({"type": "session.update", "session": {"type": "transcription"}}),
    "R24": _sent(_session(audio={"output": {"voice": "no-such-voice"}})),
    "R25": _voice_after_audio,
    "R26": _sent(_session(include=["item.input_audio_transcription.logprobs"])),
    "R27": _sent(_session(output_modalities=[])),
    "R28": _sent({"type": "conversation.item.retrieve", "item_id": "item_missing"}),
    "R29": _sent({"type": "conversation.item.delete", "item_id": "item_missing"}),
    "R30": _sent({**TRUNCATE, "item_id": "item_missing"}),
    "R31": _truncate_beyond,
    "R32": _truncate_text_item,
    "R33": _truncate_content_index,
    "R34": _delete_running,
    "R35": _duplicate_id,
    "R36": _sent({"type": "conversation.item.create", "item": USER_TEXT, "previous_item_id": "item_nope"}),
    "R37": _sent({"type": "conversation.item.create", "item": {"type": "mcp_call", "id": "x"}}),
    "R38": _sent(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_image", "image_url": "data:,"}],
            },
        },
        beta=True,
    ),
    "R39": _sent(
        {"type": "response.create", "response": {"input": [{"type": "item_reference", "id": "item_nope"}]}}
    ),
    "R40": _sent({"type": "response.create", "response": {"conversation": "conv_other"}}),
    "R41": _sent({"type": "response.create", "response": {"metadata": {f"k{i}": "v" for i in range(17)}}}),
    "R42": _commit_empty,
    "R43": _buffer_full,
    "R44": _second_response,
    "R45": _sent({"type": "response.cancel"}),
    "R46": _out_of_band_cap,
    "R47": _decoder_capacity,
    "R48": _conversation_full,
    "R49": _bad_key,
    "R50": _foreign_origin,
    "R51": _full_server,
    "R52": _expired,
    "R55": _sent(_session(), query=TRANSCRIBING),
    "R56": _sent({"type": "session.update", "session": {"instructions": "x"}}, beta=True, query=TRANSCRIBING),
    "R57": _sent({"type": "response.create"}, query=TRANSCRIBING),
    "R58": _sent({"type": "transcription_session.update", "session": {}}, beta=True),
    "R59": _sent({"type": "session.update", "session": {"type": "translation"}}),
    "R60": _sent(
        {"type": "session.update", "session": {"type": "transcription", "instructions": "x"}},
        query=TRANSCRIBING,
    ),
}
# rows provoked by a test elsewhere (a drain needs its own server process; a bug has no input; the WebRTC call
# door's refusals need a peer connection)
CALL_LIMITS = "tests/realtime/webrtc/test_call_limits.py"
ELSEWHERE = {
    "R53": "tests/realtime/commands/test_drain.py",
    "R54": "tests/realtime/wire/test_hostile_fuzz.py",
    **{f"R{n}": CALL_LIMITS for n in (61, 62, 63, 64, 65, 66, 67, 68, 71)},
    "R69": "tests/realtime/webrtc/test_sideband.py",
    "R70": "tests/realtime/webrtc/test_call_transport.py",
    "R72": "tests/realtime/webrtc/test_sideband.py",
}


@dataclass(frozen=True)
class Row:
    number: str
    code: str | None
    error_type: str
    param: str | None


def _cell(text: str) -> str | None:
    value = text.strip().strip("`")
    return None if value == NULL else value


def table_rows() -> dict[str, Row]:
    """The rows of the refusal table in docs/PROTOCOL.md §8.3: ``| R1 | what | code | type | param | source |``."""
    rows: dict[str, Row] = {}
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| (R\d+) \|", line)
        if match:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[match.group(1)] = Row(cells[0], _cell(cells[2]), _cell(cells[3]) or "", _cell(cells[4]))
    return rows


ROWS = table_rows()


def test_the_table_and_the_cases_agree() -> None:
    assert set(ROWS) == set(CASES) | set(ELSEWHERE), "a refusal row without a test, or a test without a row"
    for number, path in ELSEWHERE.items():
        text = (PROTOCOL.parents[1] / path).read_text(encoding="utf-8")
        assert str(ROWS[number].code) in text, (number, path)


@pytest.mark.parametrize("number", sorted(CASES, key=lambda n: int(n[1:])))
async def test_refusal(number: str, server: ServerHandle, small: ServerHandle) -> None:
    row = ROWS[number]
    probe = await asyncio.wait_for(CASES[number](server, small), timeout=60)
    error = probe.error
    assert (error["code"], error["type"], error["param"]) == (row.code, row.error_type, row.param), error
    assert "Traceback" not in error["message"] and error["message"]
    assert error["event_id"] == (EVENT_ID if probe.echoes_event_id else None), error
