"""The documented load balancer in front of replicas (docs/DEPLOY.md): Debian's HAProxy running the very file
``docs/deploy/haproxy.cfg`` proxies Realtime WebSockets to two replicas, spreads sessions over both, and stops
sending new sessions to a replica whose ``/health/ready`` fails (draining) while its open sessions carry on.

The two "replicas" are two apps on two ports over one test runtime, each with its own readiness (a
`RuntimeView`); what is under test is the proxy configuration and the readiness contract, not the runtime.
Skipped (with the reason) when ``haproxy`` is not installed (``apt-get install haproxy``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.config import ServerConfig
from realtime.http.app import create_app
from realtime.speech.runtime import Runtime
from tests.support.server_harness import RuntimeView, ServerHandle, start_server
from tests.support.wire_check import RawClient

pytestmark = [pytest.mark.slow]

CONFIG_FILE = Path(__file__).resolve().parents[3] / "docs" / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
START_TIMEOUT_S = 15.0
# The config checks every 1 s and needs 2 failures: a draining replica is out within ~2-3 s.
MARKED_DOWN_WAIT_S = 4.0
POLL_S = 0.1
SESSIONS = 4
STOP_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def replicas(t2w_cache: Path) -> Iterator[tuple[ServerHandle, list[RuntimeView]]]:
    """Two replica apps; their runtime views (to flip ``draining``) in port order."""
    views: list[RuntimeView] = []

    def replica(runtime: Runtime) -> Any:
        view = RuntimeView(runtime)
        views.append(view)
        return create_app(view, web_demo_dir=None)

    handle = start_server(
        ServerConfig(backend="synthetic", synthetic_tokens_per_second=400, cache_dir=t2w_cache),
        [replica, replica],
    )
    yield handle, views
    handle.stop()


@pytest.fixture(scope="module")
def balancer(
    replicas: tuple[ServerHandle, list[RuntimeView]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """HAProxy on ``docs/deploy/haproxy.cfg``; yields its ``ws://`` base URL."""
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    handle, _ = replicas
    listen = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    env.update(
        LISTEN=listen, REPLICA_1=f"127.0.0.1:{handle.ports[0]}", REPLICA_2=f"127.0.0.1:{handle.ports[1]}"
    )
    log_path = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(CONFIG_FILE)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"http://{listen}/health/live"):
            assert process.poll() is None, f"haproxy exited at start:\n{log_path.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "haproxy did not start proxying"
            time.sleep(POLL_S)
        yield f"ws://{listen}"
    finally:
        process.terminate()
        process.wait(timeout=STOP_TIMEOUT_S)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


async def _open_sessions(handle: ServerHandle) -> list[int]:
    async with httpx.AsyncClient() as http:
        return [
            (await http.get(handle.http_url("/health", index=index))).json()["sessions"]
            for index in range(len(handle.ports))
        ]


async def _spoken_reply(client: RawClient) -> None:
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    assert any(e["type"] == "response.output_audio.delta" for e in events), [e["type"] for e in events]
    assert events[-1]["response"]["status"] == "completed", events[-1]


async def test_sessions_spread_and_a_draining_replica_gets_no_new_ones(
    replicas: tuple[ServerHandle, list[RuntimeView]], balancer: str
) -> None:
    handle, views = replicas
    before = await _open_sessions(handle)
    clients = [await RawClient.connect(f"{balancer}/v1/realtime") for _ in range(SESSIONS)]
    try:
        spread = [now - then for now, then in zip(await _open_sessions(handle), before, strict=True)]
        assert spread == [SESSIONS // 2, SESSIONS // 2], spread  # leastconn alternates
        await _spoken_reply(clients[0])  # a whole response through the proxy

        views[1].draining = True  # replica 2 starts draining: its readiness turns 503
        await asyncio.sleep(MARKED_DOWN_WAIT_S)
        during = await _open_sessions(handle)
        late = [await RawClient.connect(f"{balancer}/v1/realtime") for _ in range(SESSIONS)]
        clients += late
        after = await _open_sessions(handle)
        assert after[1] == during[1], "a draining replica got new sessions"
        assert after[0] == during[0] + SESSIONS
        # Sessions already on the draining replica live on.
        for client in clients[:SESSIONS]:
            await client.alive()
        await _spoken_reply(clients[1])
    finally:
        views[1].draining = False
        for client in clients:
            await client.close()
