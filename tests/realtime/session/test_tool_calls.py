"""Function calls: the incremental ``<tool_call>`` scanner, the prompt forms, and the docs/PROTOCOL.md §5.4
event sequence over a real server (app `APP_TOOL_CALL` appends a tool call, split across text deltas, to every
real reply)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from realtime.backends.base import TOOL_SCHEMAS_ROLE, GenerationInput, PromptTurn
from realtime.backends.sglang.prompt import PromptBuilder
from realtime.session.tool_calls import (
    CallArguments,
    CallFinished,
    CallStarted,
    PlainText,
    ScanEvent,
    ToolCallScanner,
    call_text,
    tool_schemas_json,
)
from streaming_parser import VocabLayout
from tests.realtime.conftest import (
    APP_TOOL_CALL,
    TOOL_CALL_ARGUMENTS,
    TOOL_REQUESTS,
)
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER_TEXT = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "weather in paris"}],
}


def scan_all(text: str) -> list[ScanEvent]:
    """Scan a whole text at once."""
    scanner = ToolCallScanner()
    return [*scanner.feed(text), *scanner.flush()]


def _merged(events: Sequence[ScanEvent]) -> list[ScanEvent]:
    """Adjacent text and argument pieces joined: the chunking-independent view of a scan."""
    out: list[ScanEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, PlainText) and isinstance(last, PlainText):
            out[-1] = PlainText(last.text + event.text)
        elif isinstance(event, CallArguments) and isinstance(last, CallArguments):
            out[-1] = CallArguments(last.delta + event.delta)
        else:
            out.append(event)
    return out


MIXED = 'Sure.\n<tool_call>function\nget_weather\n{"city": "Paris"}\n</tool_call> and <tool_call>function\nf\n{}</tool_call><to'


def test_scan_whole_text() -> None:
    assert _merged(scan_all(MIXED)) == [
        PlainText("Sure.\n"),
        CallStarted("get_weather"),
        CallArguments('{"city": "Paris"}'),
        CallFinished("get_weather", '{"city": "Paris"}'),
        PlainText(" and "),
        CallStarted("f"),
        CallArguments("{}"),
        CallFinished("f", "{}"),
        PlainText("<to"),  # held back as a possible tag, then released as text at the end
    ]


def test_any_chunking_gives_the_same_events() -> None:
    whole = _merged(scan_all(MIXED))
    for first in range(len(MIXED) + 1):
        for second in range(first, len(MIXED) + 1, 7):
            scanner = ToolCallScanner()
            events = [
                *scanner.feed(MIXED[:first]),
                *scanner.feed(MIXED[first:second]),
                *scanner.feed(MIXED[second:]),
                *scanner.flush(),
            ]
            assert _merged(events) == whole, (first, second)


def test_one_character_at_a_time_streams_arguments_before_the_close_tag() -> None:
    scanner = ToolCallScanner()
    seen: list[ScanEvent] = []
    text = call_text("f", '{"a": 1}')
    for char in text[: -len("</tool_call>")]:
        seen.extend(scanner.feed(char))
    assert (
        CallStarted("f") in seen
        and "".join(e.delta for e in seen if isinstance(e, CallArguments)) == '{"a": 1}'
    )
    assert scanner.in_call
    assert scanner.feed("</tool_call>") == [CallFinished("f", '{"a": 1}')]


def test_unfinished_call_and_non_calls() -> None:
    assert _merged(scan_all('<tool_call>function\nf\n{"a":')) == [
        CallStarted("f"),
        CallArguments('{"a":'),
        CallFinished("f", '{"a":', complete=False),
    ]
    assert _merged(scan_all("<tool_call>func")) == [PlainText("<tool_call>func")]  # never named a function
    assert _merged(scan_all("a <tool_call></tool_call> b")) == [PlainText("a <tool_call></tool_call> b")]
    assert _merged(scan_all("x < y <tool y")) == [PlainText("x < y <tool y")]
    assert _merged(scan_all("<tool_call>function\nf</tool_call>")) == [
        CallStarted("f"),
        CallFinished("f", ""),
    ]


def test_tool_schemas_turn_json() -> None:
    schemas = json.loads(tool_schemas_json([WEATHER_TOOL, {"type": "mcp", "server_label": "x"}]) or "")
    assert schemas == [
        {
            "type": "function",
            "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters")},
        }
    ]
    assert tool_schemas_json([]) is None


class _CharCodec:
    """One id per character, far from the special ids: decoding prompt ids back to text is exact."""

    OFFSET = 1000

    def encode(self, text: str) -> list[int]:
        return [self.OFFSET + ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i - self.OFFSET) for i in ids)


def _render(ids: Sequence[int], layout: VocabLayout) -> str:
    names = {layout.bot: "<|BOT|>", layout.eot: "<|EOT|>", layout.tts_start: "<tts_start>"}
    return "".join(names.get(i) or chr(i - _CharCodec.OFFSET) for i in ids)


def test_prompt_has_the_tools_turn_call_and_tool_output() -> None:
    layout = VocabLayout.default()
    schemas = tool_schemas_json([WEATHER_TOOL]) or ""
    request = GenerationInput(
        rid="r",
        instructions="Be brief.",
        speak=True,
        turns=[
            PromptTurn(role="system", name=TOOL_SCHEMAS_ROLE, text=schemas),
            PromptTurn(role="user", text="weather?"),
            PromptTurn(role="assistant", text=call_text("get_weather", '{"city": "Paris"}')),
            PromptTurn(role="tool", name="get_weather", text="sunny"),
        ],
    )
    prompt = PromptBuilder(layout, _CharCodec()).build(request)
    assert _render(prompt.input_ids, layout) == (
        "<|BOT|>system\nBe brief.<|EOT|>"
        f"<|BOT|>tool_json_schemas\n{schemas}<|EOT|>"
        "<|BOT|>human\nweather?<|EOT|>"
        '<|BOT|>assistant\n<tool_call>function\nget_weather\n{"city": "Paris"}</tool_call><|EOT|>'
        "<|BOT|>input\nsunny<|EOT|>"
        "<|BOT|>assistant\n<tts_start>"
    )


# over the wire ----------------------------------------------------------------------------------------------
async def _tool_response(client: RawClient, response: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    await client.send({"type": "response.create", **({"response": response} if response else {})})
    return await client.until("response.done")


def _check_call(events: list[dict[str, Any]], dialect: str) -> dict[str, Any]:
    kinds = [e["type"] for e in events]
    response_id = next(e for e in events if e["type"] == "response.created")["response"]["id"]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["type"] for e in added] == ["message", "function_call"]
    call = added[1]["item"]
    assert call["name"] == "get_weather" and call["arguments"] == "" and added[1]["output_index"] == 1
    message_done = next(e for e in events if e["type"] == "response.output_item.done")
    assert message_done["item"]["type"] == "message"  # the message item closes before the call opens
    assert events.index(message_done) < events.index(added[1])
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(deltas) > 1  # streamed as the pieces arrived, not in one go
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    for event in [*deltas, done]:
        assert (event["response_id"], event["item_id"], event["output_index"]) == (response_id, call["id"], 1)
        assert event["call_id"] == call["call_id"]
    assert "".join(e["delta"] for e in deltas) == TOOL_CALL_ARGUMENTS == done["arguments"]
    assert done["name"] == "get_weather"
    assert kinds.index("response.function_call_arguments.done") < len(kinds) - 2
    assert kinds[-2:] == ["response.output_item.done", "response.done"] or (
        dialect == "ga"
        and kinds[-3:] == ["response.output_item.done", "conversation.item.done", "response.done"]
    )
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["message", "function_call"]
    assert (
        final["output"][1]["arguments"] == TOOL_CALL_ARGUMENTS and final["output"][1]["status"] == "completed"
    )
    return dict(final["output"][1])


@pytest.mark.parametrize("beta", [False, True])
async def test_spoken_answer_then_function_call_then_its_output(server: ServerHandle, beta: bool) -> None:
    client = await RawClient.connect(server.ws_url(index=APP_TOOL_CALL), beta=beta)
    try:
        session: dict[str, Any] = {"tools": [WEATHER_TOOL], "tool_choice": "auto"}
        if not beta:
            session["type"] = "realtime"
        await client.send({"type": "session.update", "session": session})
        assert (await client.recv())["type"] == "session.updated"
        await client.send({"type": "conversation.item.create", "item": USER_TEXT})
        await client.until("conversation.item.done" if not beta else "conversation.item.created")
        TOOL_REQUESTS.clear()
        events = await _tool_response(client)
        call = _check_call(events, client.dialect)
        audio = "response.audio.delta" if beta else "response.output_audio.delta"
        assert any(e["type"] == audio for e in events)  # the spoken answer came first
        transcript = "response.audio_transcript.done" if beta else "response.output_audio_transcript.done"
        assert "tool_call" not in next(e for e in events if e["type"] == transcript)["transcript"]
        first = TOOL_REQUESTS[-1]
        assert first.turns[0] == PromptTurn(
            role="system", name=TOOL_SCHEMAS_ROLE, text=tool_schemas_json([WEATHER_TOOL])
        )

        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "sunny"}'}
        await client.send({"type": "conversation.item.create", "item": output})
        await client.until("conversation.item.done" if not beta else "conversation.item.created")
        await _tool_response(client)
        turns = TOOL_REQUESTS[-1].turns
        roles = [turn.role for turn in turns]
        # tools, user, the spoken reply (its raw ids hold the call: the call item adds no turn), tool output
        assert roles == ["system", "user", "assistant", "tool"]
        assert turns[2].output_ids and turns[3] == PromptTurn(
            role="tool", text='{"sky": "sunny"}', name="get_weather"
        )
    finally:
        await client.close()


async def test_text_only_reply_with_a_call_and_tool_choice_none(server: ServerHandle) -> None:
    client = await RawClient.connect(server.ws_url(index=APP_TOOL_CALL))
    try:
        await client.send({"type": "conversation.item.create", "item": USER_TEXT})
        await client.until("conversation.item.done")
        TOOL_REQUESTS.clear()
        events = await _tool_response(
            client, {"output_modalities": ["text"], "tools": [WEATHER_TOOL], "tool_choice": "none"}
        )
        _check_call(events, "ga")
        text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == deltas and text.endswith(" Done.\n") and "<tool" not in text  # text outside tags stays
        assert all(turn.name != TOOL_SCHEMAS_ROLE for turn in TOOL_REQUESTS[-1].turns)  # tool_choice none
    finally:
        await client.close()
