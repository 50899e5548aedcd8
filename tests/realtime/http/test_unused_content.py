"""Content OpenAI accepts that the model cannot use (docs/PROTOCOL.md §3.1): accepted, stored, echoed without
its data, returned by a retrieve, left out of the prompt, counted in ``/metrics``.

pipecat with video on sends every camera frame as an ``input_image`` part; an ``error`` for it ends pipecat's
session, so refusing was never an option.
"""

from __future__ import annotations

from typing import Any

from realtime.backends.base import GenerationInput
from realtime.speech.runtime import Runtime
from tests.realtime.conftest import APP_TOOL_CALL, TOOL_REQUESTS
from tests.realtime.http.conftest import SdkFactory
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

IMAGE = "data:image/jpeg;base64," + "/9j/" + "A" * 4000  # the shape pipecat sends; never decoded here


def _count(runtime: Runtime | None, kind: str, door: str) -> float:
    assert runtime is not None
    value = runtime.metrics.registry.get_sample_value(
        "streamvoice_unused_content_parts_total", {"kind": kind, "door": door}
    )
    return value or 0.0


def _image_item(item_id: str, *, text: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_image", "image_url": IMAGE, "detail": "low"}]
    if text is not None:
        content.append({"type": "input_text", "text": text})
    return {"type": "message", "role": "user", "id": item_id, "content": content}


async def test_an_image_is_stored_returned_and_kept_out_of_the_prompt(server: ServerHandle) -> None:
    before = _count(server.runtime, "input_image", "realtime")
    client = await RawClient.connect(server.ws_url(index=APP_TOOL_CALL))
    try:
        await client.send({"type": "conversation.item.create", "item": _image_item("item_frame")})
        added = (await client.until("conversation.item.added"))[-1]["item"]
        assert added["content"] == [{"type": "input_image", "detail": "low"}]  # no data in the echo
        await client.until("conversation.item.done")
        await client.send(
            {"type": "conversation.item.create", "item": _image_item("item_ask", text="What now?")}
        )
        await client.until("conversation.item.done")
        await client.send({"type": "conversation.item.retrieve", "item_id": "item_frame"})
        retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
        assert retrieved["content"] == [{"type": "input_image", "image_url": IMAGE, "detail": "low"}]
        TOOL_REQUESTS.clear()
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert not any(e["type"] == "error" for e in events)
        request: GenerationInput = TOOL_REQUESTS[-1]
        users = [turn for turn in request.turns if turn.role == "user"]
        assert [turn.text for turn in users] == ["What now?"]  # the image-only message gives no turn
        assert not any(IMAGE[:40] in (turn.text or "") for turn in request.turns)
    finally:
        await client.close()
    assert _count(server.runtime, "input_image", "realtime") == before + 2


async def test_chat_accepts_image_and_file_parts_and_leaves_them_out(
    sdk: SdkFactory, server: ServerHandle
) -> None:
    before = _count(server.runtime, "image_url", "chat"), _count(server.runtime, "file", "chat")
    TOOL_REQUESTS.clear()
    messages: Any = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe it."},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                },
            ],
        },
    ]
    completion = await sdk(server, APP_TOOL_CALL).chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content is not None
    users = [turn for turn in TOOL_REQUESTS[-1].turns if turn.role == "user"]
    assert [turn.text for turn in users] == ["Describe it."]
    after = _count(server.runtime, "image_url", "chat"), _count(server.runtime, "file", "chat")
    assert after == (before[0] + 1, before[1] + 1)
