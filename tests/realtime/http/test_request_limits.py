"""Request-level limits on the app itself (in process, one event loop): the transcription cap, the body memory
budget, bounded error messages, and the units behind the connection limits.

The whole-process probes (open files, timeouts, drain, the log) are in test_connection_limits.py and
test_drain_http.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from realtime.errors import MAX_MESSAGE_CHARS, MAX_QUOTED_CHARS, bounded_message
from realtime.http import request_limits
from realtime.http.app import create_app
from realtime.http.capacity import ACCEPT_ERROR_MESSAGE, AcceptErrorLog, OpenFiles, connection_capacity
from realtime.http.connections import is_health_request
from realtime.http.log_filters import REDACTED, OneLineClientFaults, RedactSecrets, redact
from realtime.http.request_limits import BodyBudget
from realtime.speech.transcribe import TranscriptionSlots
from tests.realtime.http.test_transcriptions import PATH, wav
from tests.realtime.session.test_transcription import speech_pcm
from tests.support.server_harness import RuntimeView, ServerHandle
from tests.support.wire_check import RawClient

MB = 1024 * 1024
LONG = "k" * 987  # the length the probe quoted


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=30)


def _view(server: ServerHandle, **changes: object) -> RuntimeView:
    assert server.runtime is not None
    return RuntimeView(server.runtime, **changes)


def _upload(seconds: float = 1.0) -> dict[str, tuple[str, bytes]]:
    return {"file": ("speech.wav", wav(speech_pcm(seconds)))}


async def test_transcriptions_wait_for_a_slot_then_get_503_with_their_code(server: ServerHandle) -> None:
    view = _view(server)
    view.transcriptions = TranscriptionSlots(1, wait_seconds=0.2)
    await view.transcriptions.acquire()  # a Realtime session's transcription holds the only slot
    async with _client(create_app(view, web_demo_dir=None)) as http:
        busy = await http.post(PATH, data={"model": "m"}, files=_upload())
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "transcription_capacity_reached"
        assert busy.json()["error"]["type"] == "server_error"

        async def free_soon() -> None:
            await asyncio.sleep(0.05)
            view.transcriptions.release()

        freer = asyncio.create_task(free_soon())
        served = await http.post(PATH, data={"model": "m"}, files=_upload())
        await freer
        assert served.status_code == 200, served.text
        streamed = await http.post(PATH, data={"model": "m", "stream": "true"}, files=_upload())
        assert streamed.status_code == 200 and "transcript.text.done" in streamed.text
    assert view.transcriptions.live == 0  # every request gave its slot back, streamed or not


async def test_a_body_larger_than_the_budget_is_413_before_it_is_read(server: ServerHandle) -> None:
    app = create_app(_view(server, body_memory_mb=1), web_demo_dir=None)
    async with _client(app) as http:
        declared = await http.post(PATH, data={"model": "m"}, files={"file": ("a.wav", b"\0" * (2 * MB))})
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(40):
                yield b"x" * (64 * 1024)

        json_type = {"content-type": "application/json"}
        streamed = await http.post("/v1/chat/completions", content=chunked(), headers=json_type)
        assert streamed.status_code == 413, streamed.text
    assert app.state.body_budget.used == 0


async def test_a_body_waits_for_room_then_gets_503(
    server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_limits, "BODY_WAIT_S", 0.2)
    app = create_app(_view(server, body_memory_mb=1), web_demo_dir=None)
    budget: BodyBudget = app.state.body_budget
    assert await budget.reserve(MB, 0)  # other uploads fill the budget
    files = _upload(2.0)  # ~64 KB of WAV: over the large-body threshold
    async with _client(app) as http:
        refused = await http.post(PATH, data={"model": "m"}, files=files)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "upload_capacity_reached"
        assert refused.headers["retry-after"] == "1"

        async def free_soon() -> None:
            await asyncio.sleep(0.05)
            budget.release(MB)

        freer = asyncio.create_task(free_soon())
        served = await http.post(PATH, data={"model": "m"}, files=files)
        await freer
        assert served.status_code == 200, served.text
    assert budget.used == 0


async def test_the_budget_serves_waiters_in_order() -> None:
    budget = BodyBudget(100)
    assert await budget.reserve(80, 0)
    big = asyncio.create_task(budget.reserve(60, 5))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.reserve(10, 5))  # would fit now, but waits behind the older one
    await asyncio.sleep(0.01)
    assert not big.done() and not small.done()
    budget.release(80)
    assert await big and await small and budget.used == 70


async def test_error_messages_quote_at_most_200_and_say_at_most_1000(server: ServerHandle) -> None:
    async with _client(create_app(_view(server), web_demo_dir=None)) as http:
        replies = [
            await http.post(
                "/v1/audio/speech", json={"model": "m", "input": "hi", "voice": "alloy", LONG: 1}
            ),
            await http.get("/v1/" + LONG),
            await http.get("/v1/models/" + LONG),
            await http.delete("/v1/audio/voices/" + LONG),
        ]
    for reply in replies:
        error = reply.json()["error"]
        assert len(error["message"]) <= MAX_MESSAGE_CHARS, error
        assert "k" * (MAX_QUOTED_CHARS + 1) not in error["message"], error
        assert error["param"] is None or len(error["param"]) <= MAX_QUOTED_CHARS + 30
    client = await RawClient.connect(server.ws_url())
    try:
        await client.send({"type": "session.update", "session": {"type": "realtime", LONG: 1}})
        event = await client.until("error")
        message = event[-1]["error"]["message"]
        assert len(message) <= MAX_MESSAGE_CHARS and "k" * (MAX_QUOTED_CHARS + 1) not in message
    finally:
        await client.close()


def test_bounded_message_counts_the_ellipsis() -> None:
    assert len(bounded_message("x" * 5000)) == MAX_MESSAGE_CHARS
    assert bounded_message("short") == "short"


def test_health_paths_pass_the_gate_and_nothing_else() -> None:
    assert is_health_request(b"GET /health HTTP/1.1")
    assert is_health_request(b"GET /health/ready?x=1 HTTP/1.1")
    assert is_health_request(b"HEAD /health/live HTTP/1.1")
    assert not is_health_request(b"POST /health/live HTTP/1.1")
    assert not is_health_request(b"GET /healthz HTTP/1.1")
    assert not is_health_request(b"GET /v1/models HTTP/1.1")


def test_the_connection_cap_leaves_room_for_the_servers_own_files() -> None:
    files = OpenFiles(soft=1024, hard=1024, in_use=60)
    automatic = connection_capacity(0, files, max_sessions=32)
    assert 0 < automatic < 1024 - 60
    assert connection_capacity(100, files, max_sessions=32) == 100
    assert connection_capacity(0, OpenFiles(64, 64, 60), max_sessions=32) == 1  # never 0


def test_accept_failures_are_counted_each_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[None] = []
    now = [100.0]
    handler = AcceptErrorLog(lambda: counted.append(None), interval=10.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    context = {"message": ACCEPT_ERROR_MESSAGE, "exception": OSError(24, "Too many open files")}
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(2000):
                handler(loop, context)
            now[0] += 11
            handler(loop, context)
    finally:
        loop.close()
    lines = [r for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(counted) == 2001 and len(lines) == 2
    assert "2000 time(s)" in lines[1].getMessage() and all(r.exc_info is None for r in lines)


@pytest.mark.parametrize(
    "text",
    [
        '127.0.0.1:5 - "WebSocket /v1/realtime?model=x&api_key=SECRET123" [accepted]',
        "GET /?key=SECRET123 HTTP/1.1",
        "Authorization: Bearer SECRET123",
        "api-key: SECRET123",
        "subprotocols realtime, openai-insecure-api-key.SECRET123",
        "client_secret=SECRET123&x=1",
        "value ek_SECRET123abc and sk-SECRET123abc",
    ],
)
def test_secrets_are_redacted(text: str) -> None:
    assert "SECRET123" not in redact(text) and REDACTED in redact(text)


def test_redaction_keeps_the_arguments_formatters_read() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', ("1.2.3.4", "GET", "/x?api_key=abc"), None
    )
    assert RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and record.args[2] == f"/x?api_key={REDACTED}"


def test_a_non_utf8_frame_is_one_counted_line() -> None:
    kinds: list[str] = []
    try:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    except UnicodeDecodeError:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            "",
            0,
            "Invalid UTF-8 sequence received from client.",
            None,
            __import__("sys").exc_info(),
        )
    assert OneLineClientFaults(kinds.append).filter(record)
    assert record.exc_info is None and record.levelno == logging.WARNING and kinds == ["invalid_utf8"]


def test_secrets_in_json_are_redacted() -> None:
    text = '{"api_key": "SECRET123", "model": "x"}'
    assert redact(text) == f'{{"api_key": "{REDACTED}", "model": "x"}}'


def test_format_placeholders_survive_redaction() -> None:
    """``key=%s`` in a format string is no secret: its argument is redacted instead, and the line formats."""
    record = logging.LogRecord(
        "realtime",
        logging.INFO,
        "",
        0,
        "session model=%s key=%s bearer %s",
        ("x", "server", "Bearer abcdef"),
        None,
    )
    assert RedactSecrets().filter(record)
    assert record.getMessage() == f"session model=x key=server bearer Bearer {REDACTED}"
