"""Function calls in the model's text: incremental scanning, and the prompt forms of tools and calls.

`tools_prompt` is the one builder of the tools part of a prompt (the ``tool_json_schemas`` turn and the
directives added to the instructions), shared by Realtime (realtime/session/response_plan.py) and
``/v1/chat/completions`` (realtime/http/chat_request.py): each door reads its own wire shape of ``tool_choice``
into a `ToolChoice` and both get the same turn, and the same refusal of a forced function that is not among the
tools (OpenAI refuses it: "Tool choice ... not found in 'tools' parameter").

Step-Audio-2 writes a tool call as plain text after ``<tts_end>`` (or anywhere in a text-only reply)
(docs/SGLANG.md §3.4)::

    <tool_call>function
    {name}
    {json arguments}</tool_call>

`ToolCallScanner` splits a stream of text deltas into plain text and function calls as the text arrives:
tags may be split across deltas at any position, and text outside the tags stays text. Any chunking of the
same text gives the same events (merged), which the tests check by splitting at every position.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from realtime.backends.base import TOOL_SCHEMAS_ROLE, PromptTurn
from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation, quote

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
CALL_KIND = "function"  # the first header line; the only kind the Realtime API has


@dataclass(frozen=True)
class PlainText:
    """Text outside any tool call."""

    text: str


@dataclass(frozen=True)
class CallStarted:
    """A call's header is complete: its function name is known, its arguments follow."""

    name: str


@dataclass(frozen=True)
class CallArguments:
    """A piece of the current call's JSON arguments (leading/trailing whitespace of the whole is dropped)."""

    delta: str


@dataclass(frozen=True)
class CallFinished:
    """The current call ended.

    Attributes:
        name: function name.
        arguments: the whole argument text (the concatenation of its `CallArguments`).
        complete: False when the text stopped before ``</tool_call>`` (length limit).
    """

    name: str
    arguments: str
    complete: bool = True


ScanEvent = PlainText | CallStarted | CallArguments | CallFinished


class _State(enum.Enum):
    TEXT = "text"
    HEADER = "header"  # after <tool_call>, before "function\n{name}\n" is complete
    ARGUMENTS = "arguments"


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag`` (it may become the tag)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ToolCallScanner:
    """Incremental splitter of model text into `PlainText` and function-call events. One per response."""

    def __init__(self) -> None:
        self._state = _State.TEXT
        self._pending = ""  # text not yet classified
        self._name = ""
        self._arguments: list[str] = []

    @property
    def in_call(self) -> bool:
        """True between ``<tool_call>`` and ``</tool_call>``."""
        return self._state is not _State.TEXT

    def feed(self, text: str) -> list[ScanEvent]:
        """Scan the next piece of text; return the events it completes."""
        self._pending += text
        events: list[ScanEvent] = []
        while True:
            before = (self._state, len(self._pending))
            if self._state is _State.TEXT:
                self._scan_text(events)
            elif self._state is _State.HEADER:
                self._scan_header(events)
            else:
                self._scan_arguments(events)
            if (self._state, len(self._pending)) == before:
                return events

    def flush(self) -> list[ScanEvent]:
        """The text ended: return what is still held (an unfinished call ends with ``complete=False``)."""
        events: list[ScanEvent] = []
        if self._state is _State.TEXT:
            if self._pending:
                events.append(PlainText(self._pending))
        elif self._state is _State.HEADER:
            events.append(PlainText(OPEN_TAG + self._pending))  # never became a call: keep it as text
        else:
            tail = self._pending.rstrip()
            if tail:
                events.append(self._argument(tail))
            events.append(CallFinished(self._name, "".join(self._arguments), complete=False))
        self._pending = ""
        self._state = _State.TEXT
        return events

    def _scan_text(self, events: list[ScanEvent]) -> None:
        start = self._pending.find(OPEN_TAG)
        if start >= 0:
            if start:
                events.append(PlainText(self._pending[:start]))
            self._pending = self._pending[start + len(OPEN_TAG) :]
            self._state = _State.HEADER
            return
        keep = _partial_tag_suffix(self._pending, OPEN_TAG)
        ready = self._pending[: len(self._pending) - keep]
        if ready:
            events.append(PlainText(ready))
            self._pending = self._pending[len(ready) :]

    def _scan_header(self, events: list[ScanEvent]) -> None:
        close = self._pending.find(CLOSE_TAG)
        header = self._pending.lstrip() if close < 0 else self._pending[:close].lstrip()
        lines = header.split("\n", 2)
        if close < 0 and len(lines) < 3:
            return  # wait for "function\n{name}\n"
        kind = lines[0].strip()
        name = lines[1].strip() if len(lines) > 1 else ""
        if not name:  # "<tool_call>name\n{args}" without the kind line: the first line is the name
            kind, name = CALL_KIND, kind
        if not name:
            # nothing that names a function: it was text after all
            events.append(PlainText(OPEN_TAG + self._pending[: close + len(CLOSE_TAG)]))
            self._pending = self._pending[close + len(CLOSE_TAG) :]
            self._state = _State.TEXT
            return
        self._name, self._arguments = name, []
        events.append(CallStarted(name))
        rest = lines[2] if len(lines) > 2 else ""
        self._pending = rest.lstrip() + (self._pending[close:] if close >= 0 else "")
        self._state = _State.ARGUMENTS

    def _scan_arguments(self, events: list[ScanEvent]) -> None:
        if not self._arguments:
            self._pending = self._pending.lstrip()
        close = self._pending.find(CLOSE_TAG)
        if close >= 0:
            last = self._pending[:close].rstrip()
            if last:
                events.append(self._argument(last))
            events.append(CallFinished(self._name, "".join(self._arguments)))
            self._pending = self._pending[close + len(CLOSE_TAG) :]
            self._state = _State.TEXT
            return
        keep = _partial_tag_suffix(self._pending, CLOSE_TAG)
        ready = self._pending[: len(self._pending) - keep]
        ready = ready.rstrip()  # trailing whitespace may turn out to precede the closing tag
        if ready:
            events.append(self._argument(ready))
            self._pending = self._pending[len(ready) :]

    def _argument(self, delta: str) -> CallArguments:
        self._arguments.append(delta)
        return CallArguments(delta)


def call_text(name: str, arguments: str) -> str:
    """A function call in the model's own format, for re-inserting a call into the prompt."""
    return f"{OPEN_TAG}{CALL_KIND}\n{name}\n{arguments}{CLOSE_TAG}"


def tool_schemas_json(tools: Iterable[Mapping[str, Any]]) -> str | None:
    """Realtime function tools as the JSON of a ``tool_json_schemas`` turn (chat-completions style), or None.

    The Realtime API's flat ``{type, name, description, parameters}`` becomes
    ``{"type": "function", "function": {name, description, parameters}}``, the form StepFun's examples put in
    that turn. Tools of other types (e.g. MCP) are not callable by this model and are left out.
    """
    schemas = []
    for tool in tools:
        if tool.get("type", CALL_KIND) != CALL_KIND or not tool.get("name"):
            continue
        function = {key: tool[key] for key in ("name", "description", "parameters") if key in tool}
        schemas.append({"type": CALL_KIND, "function": function})
    return json.dumps(schemas, ensure_ascii=False) if schemas else None


@dataclass(frozen=True)
class ForcedFunction:
    """``tool_choice`` naming one function the model must call."""

    name: str


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | ForcedFunction
# tool_choice "required" and parallel_tool_calls=false have no sampling switch here: the model is told
REQUIRED_DIRECTIVE = "Answer by calling one of the tools."
SINGLE_CALL_DIRECTIVE = "Call at most one tool in a reply."


@dataclass(frozen=True)
class ToolsPrompt:
    """The tools part of one prompt.

    Attributes:
        turns: the ``tool_json_schemas`` system turn (empty when no tool is offered).
        directives: lines appended to the instructions (only when a tool is offered).
    """

    turns: tuple[PromptTurn, ...] = ()
    directives: tuple[str, ...] = ()


def realtime_tool_choice(value: Any) -> ToolChoice:
    """A Realtime ``tool_choice`` (``"auto"``, ``{"type": "function", "name": ...}``, ...) as a `ToolChoice`.

    A choice of another tool type (``mcp``) offers nothing this model can call: the tools stay optional.
    """
    if value in ("auto", "none", "required"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping) and value.get("type", CALL_KIND) == CALL_KIND and value.get("name"):
        return ForcedFunction(str(value["name"]))
    return "auto"


def check_tool_choice(tools: Sequence[Mapping[str, Any]], choice: ToolChoice, param: str) -> None:
    """Refuse a forced function that is not among the function ``tools`` (as OpenAI does).

    Raises:
        ProtocolViolation: ``invalid_value`` on ``param``.
    """
    if not isinstance(choice, ForcedFunction):
        return
    if any(tool.get("type", CALL_KIND) == CALL_KIND and tool.get("name") == choice.name for tool in tools):
        return
    raise ProtocolViolation(
        CODE_INVALID_VALUE,
        f"Tool choice 'function' with name '{quote(choice.name)}' not found in 'tools' parameter.",
        param,
    )


def tools_prompt(
    tools: Sequence[Mapping[str, Any]], choice: ToolChoice, *, param: str, single_call: bool = False
) -> ToolsPrompt:
    """The tools turn and directives for ``tools`` (Realtime's flat function shape) under ``choice``.

    ``none`` offers no tool; a forced function offers only that one and requires a call, as ``required``
    does; ``single_call`` (``parallel_tool_calls: false``) asks for one call at most.

    Raises:
        ProtocolViolation: the forced function is not among ``tools`` (see `check_tool_choice`).
    """
    check_tool_choice(tools, choice, param)
    if choice == "none":
        return ToolsPrompt()
    if isinstance(choice, ForcedFunction):
        tools = [tool for tool in tools if tool.get("name") == choice.name]
    schemas = tool_schemas_json(tools)
    if schemas is None:
        return ToolsPrompt()
    directives = [REQUIRED_DIRECTIVE] if choice == "required" or isinstance(choice, ForcedFunction) else []
    if single_call:
        directives.append(SINGLE_CALL_DIRECTIVE)
    turn = PromptTurn(role="system", name=TOOL_SCHEMAS_ROLE, text=schemas)
    return ToolsPrompt((turn,), tuple(directives))
