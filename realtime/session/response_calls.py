"""The function calls of one response: the model's ``<tool_call>`` text -> ``function_call`` output items.

`ResponseCalls` feeds the response's non-spoken text through a `ToolCallScanner` while the reply streams,
returns the plain text for the text part, and holds the calls. Once the message item is done, `emit` writes
each call as its own output item (docs/PROTOCOL.md §5.4)::

    response.output_item.added {function_call, arguments ""}   (+ conversation.item.added when in-band)
    response.function_call_arguments.delta *
    response.function_call_arguments.done {call_id, name, arguments}
    response.output_item.done                                    (+ conversation.item.done on GA)

Calls follow the message item (``output_index`` 1, 2, ...), as OpenAI orders a spoken answer before its call;
the argument deltas are the pieces the scanner produced while the text streamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from realtime.session.conversation import Conversation
from realtime.session.tool_calls import (
    CallArguments,
    CallFinished,
    CallStarted,
    PlainText,
    ScanEvent,
    ToolCallScanner,
)
from realtime.wire.records import Item, ResponseRecord, new_id
from realtime.wire.server_events import EventBuilder


class ResponseCalls:
    """Scans one response's text for function calls (event-loop only).

    Args:
        max_calls: keep at most this many calls (``parallel_tool_calls: false`` keeps the first); None: all.
    """

    def __init__(self, max_calls: int | None = None) -> None:
        self._scanner = ToolCallScanner()
        self._held: list[ScanEvent] = []
        self._max_calls = max_calls
        self._calls = 0
        self._dropping = False

    def feed(self, text: str) -> str:
        """Scan a text delta; return its plain text (outside any call), possibly empty."""
        return self._keep(self._scanner.feed(text))

    def finish(self) -> str:
        """The reply ended normally: return held plain text; an unfinished call is kept as incomplete."""
        return self._keep(self._scanner.flush())

    def _keep(self, events: list[ScanEvent]) -> str:
        plain = []
        for event in events:
            if isinstance(event, PlainText):
                plain.append(event.text)
            elif isinstance(event, CallStarted):
                self._calls += 1
                self._dropping = self._max_calls is not None and self._calls > self._max_calls
                if not self._dropping:
                    self._held.append(event)
            elif not self._dropping:
                self._held.append(event)
        return "".join(plain)

    async def emit(
        self,
        put: Callable[[BaseModel], Awaitable[None]],
        events: EventBuilder,
        record: ResponseRecord,
        conversation: Conversation | None,
    ) -> list[Item]:
        """Queue the held calls as output items (``put`` queues one event); returns the items."""
        items: list[Item] = []
        item: Item | None = None
        index = 0
        for event in self._held:
            if isinstance(event, CallStarted):
                item = Item(
                    id=new_id("item"),
                    kind="function_call",
                    status="in_progress",
                    call_id=new_id("call"),
                    name=event.name,
                    arguments="",
                )
                index = len(record.output)
                record.output.append(item)
                items.append(item)
                await put(events.output_item_added(record.id, index, item))
                if conversation is not None:
                    # part of a response admitted at response.create: never refused by the caps mid-way
                    await put(events.item_added(item, conversation.insert(item, admitted=True)))
            elif item is not None and isinstance(event, CallArguments):
                item.arguments = (item.arguments or "") + event.delta
                await put(
                    events.event(
                        "response.function_call_arguments.delta",
                        delta=event.delta,
                        **_ids(record, index, item),
                    )
                )
            elif item is not None and isinstance(event, CallFinished):
                item.arguments = event.arguments
                item.status = "completed" if event.complete else "incomplete"
                fields = _ids(record, index, item)
                done = events.event(
                    "response.function_call_arguments.done",
                    name=event.name,
                    arguments=event.arguments,
                    **fields,
                )
                await put(done)
                await put(events.output_item_done(record.id, index, item))
                if conversation is not None:
                    for finished in events.item_done(item):
                        await put(finished)
                item = None
        self._held.clear()
        return items


def _ids(record: ResponseRecord, index: int, item: Item) -> dict[str, Any]:
    return {"response_id": record.id, "item_id": item.id, "output_index": index, "call_id": item.call_id}
