"""One builder for the tools part of a prompt: Realtime and ``/v1/chat/completions`` build the same turn.

Each door reads its own wire shape of ``tools`` / ``tool_choice`` (Realtime's flat ``{"type": "function",
"name": ...}``, chat's ``{"type": "function", "function": {"name": ...}}``) and both go through
`realtime.session.tool_calls.tools_prompt`. A forced function that is not among the tools is refused on both
doors with the same code and message (OpenAI: "Tool choice ... not found in 'tools' parameter"), where Realtime
used to send no tools and chat all of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime.errors import ProtocolViolation
from realtime.http.chat_request import ChatRequest, tools_part
from realtime.session.conversation import Conversation
from realtime.session.response_plan import plan_response
from realtime.session.tool_calls import (
    REQUIRED_DIRECTIVE,
    SINGLE_CALL_DIRECTIVE,
    ToolsPrompt,
)
from realtime.speech.runtime import Runtime
from realtime.wire.client_events import ResponseCreate
from realtime.wire.session_config import DEFAULT_INSTRUCTIONS, SessionConfig
from tests.support.fake_transport import FakeTransport
from tests.support.session_harness import running

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {
    "name": "get_time",
    "description": "The time now.",
    "parameters": {"type": "object", "properties": {}},
}
REALTIME_TOOLS = tuple({"type": "function", **tool} for tool in (WEATHER, TIME))
CHAT_TOOLS = [{"type": "function", "function": tool} for tool in (WEATHER, TIME)]


def _realtime_choice(choice: str) -> Any:
    return choice if choice in ("auto", "none", "required") else {"type": "function", "name": choice}


def _chat_choice(choice: str) -> Any:
    return (
        choice
        if choice in ("auto", "none", "required")
        else {"type": "function", "function": {"name": choice}}
    )


def _realtime(choice: str, parallel: bool | None = None) -> ToolsPrompt:
    """What a Realtime response's request holds of the tools part."""
    config = SessionConfig(
        model="m",
        voice="default",
        tools=REALTIME_TOOLS,
        tool_choice=_realtime_choice(choice),
        parallel_tool_calls=parallel,
    )
    plan = plan_response(
        ResponseCreate.with_session_defaults(), config, Conversation(), resolve_voice=str, beta=False
    )
    turns = tuple(turn for turn in plan.request.turns if turn.role == "system")
    extra = plan.request.instructions.removeprefix(DEFAULT_INSTRUCTIONS).strip()
    return ToolsPrompt(turns, tuple(extra.splitlines()) if extra else ())


def _chat(choice: str) -> ToolsPrompt:
    body = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": CHAT_TOOLS,
            "tool_choice": _chat_choice(choice),
        }
    )
    return tools_part(body)


@pytest.mark.parametrize("choice", ["auto", "required", "none", "get_time"])
def test_both_doors_build_the_same_tools_part(choice: str) -> None:
    realtime, chat = _realtime(choice), _chat(choice)
    assert realtime == chat
    if choice == "none":
        assert chat == ToolsPrompt()
    else:
        (turn,) = chat.turns
        names = [tool["function"]["name"] for tool in json.loads(turn.text or "")]
        assert names == (["get_time"] if choice == "get_time" else ["get_weather", "get_time"])
        assert chat.directives == ((REQUIRED_DIRECTIVE,) if choice in ("required", "get_time") else ())


def test_parallel_tool_calls_false_asks_for_one_call() -> None:
    assert _realtime("auto", parallel=False).directives == (SINGLE_CALL_DIRECTIVE,)


def test_a_forced_function_missing_from_the_tools_is_refused_the_same_way_on_both_doors() -> None:
    with pytest.raises(ProtocolViolation) as realtime:
        _realtime("get_stock_price")
    with pytest.raises(ProtocolViolation) as chat:
        _chat("get_stock_price")
    assert (realtime.value.code, realtime.value.message) == (chat.value.code, chat.value.message)
    assert (
        realtime.value.code == "invalid_value"
        and "'get_stock_price' not found in 'tools'" in chat.value.message
    )
    assert (realtime.value.param, chat.value.param) == ("session.tool_choice", "tool_choice")


async def test_realtime_refuses_it_at_session_update_and_keeps_the_session(runtime: Runtime) -> None:
    transport = FakeTransport()
    session: dict[str, Any] = {
        "type": "realtime",
        "tools": list(REALTIME_TOOLS),
        "tool_choice": {"type": "function", "name": "get_stock_price"},
    }
    async with running(runtime, transport) as (live, _):
        await transport.send({"type": "session.update", "event_id": "evt_tc", "session": session})
        error = (await transport.until("error"))[-1]["error"]
        assert live.config.tool_choice == "auto"  # the update was refused as a whole
        session["tool_choice"] = {"type": "function", "name": "get_time"}
        await transport.send({"type": "session.update", "session": session})
        updated = (await transport.until("session.updated"))[-1]["session"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_value",
        "session.tool_choice",
        "evt_tc",
    )
    assert updated["tool_choice"] == {"type": "function", "name": "get_time"}
