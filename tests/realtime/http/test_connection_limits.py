"""Connection limits, probed as a hostile client would: whole server processes on free ports, raw sockets.

- 1,100 idle and slow connections against a server limited to 1,024 open files: a WebSocket session, a
  speech request and ``/health/live`` from another client are still served within a second, and the log has
  no traceback and no "too many open files".
- a client over its per-address cap gets 429 ``rate_limit_exceeded`` while its health checks still answer.
- slow headers and slow bodies get 408 ``request_timeout`` within their bound, and the connection closes.
- accept() failures (a cap set above what the open-file limit allows) are one log line and a counter.
- the server key never reaches the log, however it was presented.

Clients come from other loopback addresses (127.0.0.x) than the flood, as distinct hosts would.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support.raw_socket import OP_TEXT, RawSocketClient
from tests.support.served_process import ServedProcess, wait_until

pytestmark = pytest.mark.slow

FLOOD = 1100
FLOOD_OPEN_FILES = 1024
SERVED_WITHIN_S = 1.0
CLIENT = "127.0.0.2"  # the well-behaved client's address
FLOOD_ADDRESSES = [f"127.0.0.{n}" for n in range(10, 21)]  # 100 each: under the per-address cap
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
PER_ADDRESS = 4
TIGHT_CAP = 12  # the tight server's --max-connections
KEY = "sk-probe-Zq7Wm2Xc9Lr4"
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Hello there, how are you?"}


def _client_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the test process may open only {hard} files; the probe needs {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _connect(port: int, source: str, send: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if send:
        sock.sendall(send)
    return sock


def _answer(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    sock.settimeout(within)
    start = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data, time.monotonic() - start


def _status_and_error(data: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    error = json.loads(body)["error"] if body else {}
    return status, error


def _flood(port: int) -> list[socket.socket]:
    """Idle connections, slow headers and slow bodies, spread over `FLOOD_ADDRESSES`."""
    held = []
    for index in range(FLOOD):
        source = FLOOD_ADDRESSES[index % len(FLOOD_ADDRESSES)]
        kind = index % 10
        if kind == 8:  # headers that never end
            payload = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: "
        elif kind == 9:  # a body that never comes
            payload = (
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4000\r\n\r\n{"
            )
        else:  # connected, silent
            payload = b""
        try:
            held.append(_connect(port, source, payload))
        except OSError:  # the server closed it to make room, or the backlog is full: also a fine answer
            continue
    return held


async def _well_behaved_client(port: int) -> dict[str, float]:
    """Seconds each door took to serve the client at `CLIENT`."""
    taken: dict[str, float] = {}
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as http:
        start = time.monotonic()
        live = await http.get("/health/live", timeout=5)
        taken["health_live"] = time.monotonic() - start
        assert live.status_code == 200
        start = time.monotonic()
        async with http.stream("POST", "/v1/audio/speech", json=SPEECH, timeout=5) as speech:
            taken["speech"] = time.monotonic() - start
            assert speech.status_code == 200
            await speech.aread()
    start = time.monotonic()
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=x"
    async with websockets.connect(url, local_addr=(CLIENT, 0), open_timeout=5) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 5))
        taken["websocket"] = time.monotonic() - start
        assert created["type"] == "session.created"
    return taken


def test_1100_idle_and_slow_connections_under_1024_open_files_leave_every_door_served(
    t2w_cache: Path,
) -> None:
    _client_files(4 * FLOOD)
    with ServedProcess(t2w_cache, [], open_files=FLOOD_OPEN_FILES) as server:
        assert "open files: limit 1024 (hard 1024)" in server.log
        held = _flood(server.port)
        try:
            time.sleep(1.0)  # the server has accepted what it will
            taken = asyncio.run(_well_behaved_client(server.port))
            assert max(taken.values()) < SERVED_WITHIN_S, taken
            health = server.get_json("/health")
            connections = health["connections"]
            assert connections["open"] <= connections["limit"] < FLOOD_OPEN_FILES
            refused = server.metrics()
            assert 'streamvoice_connections_refused_total{reason="evicted"}' in refused, connections
        finally:
            for sock in held:
                sock.close()
    assert "Traceback" not in server.log, server.log[-5000:]
    assert "Too many open files" not in server.log, [
        line for line in server.log.splitlines() if "accept" in line
    ]


@pytest.fixture(scope="module")
def tight(t2w_cache: Path) -> Iterator[ServedProcess]:
    """A server with small connection limits and an API key (its log is checked for the key)."""
    args = [
        "--max-connections",
        str(TIGHT_CAP),
        "--max-connections-per-ip",
        str(PER_ADDRESS),
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--body-timeout",
        str(BODY_TIMEOUT_S),
        "--api-key",
        KEY,
    ]
    with ServedProcess(t2w_cache, args) as server:
        yield server


def test_over_the_per_address_cap_gets_429_and_health_still_answers(tight: ServedProcess) -> None:
    source = "127.0.0.3"
    idle = [_connect(tight.port, source) for _ in range(PER_ADDRESS)]
    try:
        extra = _connect(tight.port, source, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, error = _status_and_error(_answer(extra, 5)[0])
        assert status == 429 and error["code"] == "rate_limit_exceeded"
        health = _connect(tight.port, source, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = _answer(health, 5)
        assert data.startswith(b"HTTP/1.1 200") and b'"live"' in data
        other = _connect(tight.port, "127.0.0.4", b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(other, 5)[0].startswith(b"HTTP/1.1 200")  # another address is not affected
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: "],
    ids=["silent", "slow-headers"],
)
def test_headers_that_do_not_arrive_get_408_within_the_bound(tight: ServedProcess, sent: bytes) -> None:
    sock = _connect(tight.port, "127.0.0.5", sent)
    data, took = _answer(sock, HEADER_TIMEOUT_S + 5)
    status, error = _status_and_error(data)
    assert status == 408 and error["code"] == "request_timeout"
    assert took < HEADER_TIMEOUT_S + 1.0


def test_a_body_that_stalls_or_trickles_gets_408_within_the_bound(tight: ServedProcess) -> None:
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    sock = _connect(tight.port, "127.0.0.6", head + b'{"model": "tts-1", ')
    start = time.monotonic()
    for _ in range(20):  # a byte every 0.25 s: far below a steady upload
        time.sleep(0.25)
        try:
            sock.sendall(b" ")
        except OSError:
            break
    data, _ = _answer(sock, 5)
    took = time.monotonic() - start
    status, error = _status_and_error(data)
    assert status == 408 and error["code"] == "request_timeout"
    assert took < BODY_TIMEOUT_S + 1.5


def test_a_kept_alive_connection_is_closed_once_idle(tight: ServedProcess) -> None:
    sock = _connect(tight.port, "127.0.0.7", b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data, took = _answer(sock, HEADER_TIMEOUT_S + 6)
    assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1  # no 408 after an answer
    assert took < HEADER_TIMEOUT_S + 1.0


async def _present_the_key_every_way(port: int) -> None:
    base = f"ws://127.0.0.1:{port}/v1/realtime?model=x"
    for url, headers in (
        (f"{base}&api_key={KEY}", {}),
        (base, {"Authorization": f"Bearer {KEY}"}),
        (f"{base}&api_key={KEY}wrong", {}),
    ):
        async with websockets.connect(url, additional_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
    async with websockets.connect(base, subprotocols=protocols) as ws:  # type: ignore[list-item]
        await asyncio.wait_for(ws.recv(), 5)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await http.get(f"/v1/models?api_key={KEY}", headers={"Authorization": f"Bearer {KEY}x"})
        await http.get("/?key=" + KEY)


async def _present_an_ephemeral_key_every_way(port: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        minted = await http.post(
            "/v1/realtime/client_secrets", json={}, headers={"Authorization": f"Bearer {KEY}"}
        )
    ephemeral: str = minted.json()["value"]
    base = f"ws://127.0.0.1:{port}/v1/realtime?model=x"
    for url, headers, protocols in (
        (f"{base}&api_key={ephemeral}", {}, None),
        (base, {"Authorization": f"Bearer {ephemeral}"}, None),
        (base, {}, ["realtime", f"openai-insecure-api-key.{ephemeral}"]),
    ):
        async with websockets.connect(url, additional_headers=headers, subprotocols=protocols) as ws:  # type: ignore[arg-type]
            await asyncio.wait_for(ws.recv(), 5)
    return ephemeral


def test_no_key_reaches_the_log(tight: ServedProcess) -> None:
    """The server key and an ephemeral key, presented every way a client may, are redacted in every line."""
    asyncio.run(_present_the_key_every_way(tight.port))
    ephemeral = asyncio.run(_present_an_ephemeral_key_every_way(tight.port))
    wait_until(lambda: tight.log.count("api_key=[REDACTED]") >= 2, 5)
    assert KEY not in tight.log
    assert ephemeral not in tight.log and ephemeral[len("ek_") :] not in tight.log


def test_accept_failures_are_one_line_and_a_counter(t2w_cache: Path) -> None:
    _client_files(2048)
    # a cap the open-file limit cannot hold: accept() fails once the descriptors run out
    with ServedProcess(t2w_cache, ["--max-connections", "2000"], open_files=256) as server:
        held = _flood_plain(server.port, 400)
        try:
            time.sleep(2.0)
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: _accept_errors(server) > 0, 10)
    failures = [line for line in server.log.splitlines() if "accept() failed" in line]
    assert 1 <= len(failures) <= 2, failures
    assert "Traceback" not in server.log, server.log[-5000:]


def _flood_plain(port: int, count: int) -> list[socket.socket]:
    held = []
    for index in range(count):
        try:
            held.append(_connect(port, FLOOD_ADDRESSES[index % len(FLOOD_ADDRESSES)]))
        except OSError:
            continue
    return held


def _accept_errors(server: ServedProcess) -> float:
    for line in server.metrics().splitlines():
        if line.startswith("streamvoice_accept_errors_total "):
            return float(line.split()[1])
    return 0.0


def test_a_non_utf8_frame_is_one_line_and_counted(tight: ServedProcess) -> None:
    client = RawSocketClient(tight.port, path=f"/v1/realtime?api_key={KEY}&", rcvbuf=65536)
    try:
        client.send_frame(OP_TEXT, b"\xff\xfe{not utf-8")
        wait_until(
            lambda: 'streamvoice_transport_errors_total{kind="invalid_utf8"} 1.0' in tight.metrics(KEY), 5
        )
    finally:
        client.close()
    wait_until(lambda: "not UTF-8; closed with 1007" in tight.log, 5)  # the log arrives through a pipe
    assert "Traceback" not in tight.log and "UnicodeDecodeError" not in tight.log


def test_at_the_cap_a_body_that_does_not_arrive_makes_room_for_a_new_client(tight: ServedProcess) -> None:
    """Connections whose bodies the app waits for are closed to make room (408), like slow request heads."""
    head = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
    ).encode()
    slow = [_connect(tight.port, f"127.0.0.{30 + n % 6}", head) for n in range(TIGHT_CAP + 6)]
    try:
        start = time.monotonic()
        # A connection becomes one that may be closed for room once the app asks for its body; on a loaded
        # machine the server may not have read every slow head yet, and a client finding the cap full of
        # connections still being dispatched gets 503: it retries, well inside the body timeout.
        while True:
            client = _connect(
                tight.port,
                "127.0.0.8",
                f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode(),
            )
            client.settimeout(5)
            first = client.recv(65536)
            if not first.startswith(b"HTTP/1.1 503") or time.monotonic() - start > BODY_TIMEOUT_S / 3:
                break
            client.close()
            time.sleep(0.1)
        assert time.monotonic() - start < BODY_TIMEOUT_S  # made room at once: no timeout was needed
        assert first.startswith(b"HTTP/1.1 200"), first[:300]
        statuses = [_status_and_error(_answer(sock, 5)[0])[0] for sock in slow[:6]]
        assert set(statuses) <= {408, 0}, statuses  # the oldest were closed with 408 (or already gone)
    finally:
        for sock in slow:
            sock.close()


async def _sessions_fill_the_cap(port: int) -> tuple[bytes, bytes]:
    """`TIGHT_CAP` WebSocket sessions (busy: never closed to make room), then a health check and an API call."""
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=x"
    sockets = []
    try:
        for index in range(TIGHT_CAP):
            ws = await websockets.connect(
                url,
                local_addr=(f"127.0.0.{40 + index % 4}", 0),
                additional_headers={"Authorization": f"Bearer {KEY}"},
            )
            sockets.append(ws)
            await asyncio.wait_for(ws.recv(), 5)
        health = await asyncio.to_thread(
            lambda: _answer(_connect(port, "127.0.0.9", b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n"), 5)[
                0
            ]
        )
        api = await asyncio.to_thread(
            lambda: _answer(_connect(port, "127.0.0.9", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"), 5)[0]
        )
    finally:
        for ws in sockets:
            await ws.close()
    return health, api


def test_health_still_answers_when_busy_connections_fill_the_cap(tight: ServedProcess) -> None:
    health, api = asyncio.run(_sessions_fill_the_cap(tight.port))
    assert health.startswith(b"HTTP/1.1 200") and b'"ready"' in health, health[:300]
    status, error = _status_and_error(api)
    assert status == 503 and error["code"] == "connection_limit_reached", api[:300]
