"""Past one worker: our server -> the SGLang Model Gateway (``smg``, consistent hashing on the session's routing
key) -> two real tiny SGLang workers (docs/DEPLOY.md).

Covered: the HTTP backend's start-up against a gateway (model check through ``/get_model_info``, abort route
probed), sessions spread over both workers, one session's turns staying on one worker and reporting cached
prompt tokens, a cancel that reaches the worker running the response, the gateway going away and coming back,
and a worker killed mid-response. Which worker served a request is read from the workers' own Prometheus
counters. The kill test runs last: it takes the rig's spare worker down for good.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from realtime.audio import PCM_RATE
from realtime.backends.base import GenerationInput, PromptTurn, SamplingParams
from realtime.backends.sglang.abort import AbortRoute
from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig
from tests.step_audio2_sglang.conftest import GatewayRig
from tests.support.server_harness import ServerHandle
from tests.support.sglang import worker
from tests.support.sglang.our_server import next_event, open_session, realtime_client, start_our_server

pytestmark = [pytest.mark.sglang, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "step-audio-2-mini"
SPREAD_SESSIONS = 12  # P(all on one of two workers) = 2**-11 under consistent hashing
SHORT_REPLY_TOKENS = 12
LONG_REPLY_TOKENS = 3000
TURNS = 3
POLL_S = 0.2
SETTLE_S = 15.0  # bound on counters and gauges catching up after a request ends
FIND_SPARE_ATTEMPTS = 12
METRICS_TIMEOUT_S = 10.0
ABORT_LOG_LINE = '"POST /abort_request HTTP/1.1" 200'


def _metric(url: str, name: str) -> float:
    """Sum of one SGLang metric over its label sets."""
    text = httpx.get(f"{url}/metrics", timeout=METRICS_TIMEOUT_S).text
    pattern = rf"^sglang:{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.e+-]+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _live_requests(url: str) -> int:
    """Requests a worker's scheduler holds right now (running + waiting), from SGLang's ``GET /v1/loads``.

    Unlike the ``num_running_reqs`` gauge of ``/metrics`` (refreshed only every few dozen decode steps), this
    asks the scheduler at call time.
    """
    body = httpx.get(f"{url}/v1/loads", params={"include": "core"}, timeout=METRICS_TIMEOUT_S).json()
    total = 0
    for load in body["loads"]:  # one per data-parallel rank; the "core" keys are flat
        total += int(load["num_running_reqs"]) + int(load["num_waiting_reqs"])
    return total


def _healthy_workers(gateway_url: str) -> object:
    """What the gateway's ``/readiness`` counts as healthy workers."""
    return httpx.get(f"{gateway_url}/readiness", timeout=METRICS_TIMEOUT_S).json().get("healthy_workers")


def _requests(rig: GatewayRig) -> tuple[float, ...]:
    return tuple(_metric(url, "num_requests_total") for url in rig.worker_urls)


async def _served_by(rig: GatewayRig, before: tuple[float, ...]) -> int:
    """Index of the one worker whose request counter moved since ``before`` (waits for the counter)."""
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while True:
        moved = [i for i, (now, then) in enumerate(zip(_requests(rig), before, strict=True)) if now > then]
        if len(moved) == 1:
            return moved[0]
        assert len(moved) < 2, "one response reached both workers"
        assert asyncio.get_running_loop().time() < deadline, "no worker counted the request"
        await asyncio.sleep(POLL_S)


def _log_lines(path: Path, needle: str) -> int:
    return sum(1 for line in path.read_text(errors="replace").splitlines() if needle in line)


@pytest.fixture(scope="module")
def gateway_server(
    sglang_gateway: GatewayRig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """Our Realtime server on ``--backend sglang --sglang-url <gateway>``, nothing else changed."""
    cache = Path(tmp_path_factory.mktemp("gateway-t2w-cache"))
    handle = start_our_server(sglang_gateway.url, sglang_gateway.checkpoint.path, cache)
    yield handle
    handle.stop()


async def _say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )


async def _reply(conn: Any) -> Any:
    """Create a response and return its ``response.done`` payload (errors fail the test)."""
    await conn.response.create()
    while (event := await next_event(conn)).type != "response.done":
        assert event.type != "error", event
    return event.response


async def _until_audio(conn: Any) -> None:
    while (event := await next_event(conn)).type != "response.output_audio.delta":
        assert event.type not in ("error", "response.done"), event


async def test_backend_starts_through_the_gateway_and_spreads_sessions(sglang_gateway: GatewayRig) -> None:
    backend = SGLangHTTPBackend(
        SGLangHTTPConfig(url=sglang_gateway.url, model_dir=sglang_gateway.checkpoint.path)
    )
    await backend.start()  # /model_info is 404 on smg: the model check goes through /get_model_info
    try:
        assert backend.abort_route is AbortRoute.WORKERS
        before = _requests(sglang_gateway)
        for index in range(SPREAD_SESSIONS):
            request = GenerationInput(
                rid=f"spread-{index}",
                turns=[PromptTurn("user", text=f"session {index} says hello")],
                sampling=SamplingParams(max_new_tokens=2),
                affinity_key=f"conv_spread_{index}",
            )
            chunks = [chunk async for chunk in backend.generate(request)]
            assert chunks[-1].finish_reason is not None
        after = _requests(sglang_gateway)
    finally:
        await backend.aclose()
    per_worker = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(per_worker) == SPREAD_SESSIONS, per_worker
    assert all(count > 0 for count in per_worker), f"sessions per worker: {per_worker}"


async def test_later_turns_stay_on_one_worker_and_report_cached_tokens(
    gateway_server: ServerHandle, sglang_gateway: GatewayRig
) -> None:
    served: list[int] = []
    usages: list[Any] = []
    async with realtime_client(gateway_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, SHORT_REPLY_TOKENS)
        for turn in range(TURNS):
            await _say(conn, f"turn {turn}: tell me more")
            before = _requests(sglang_gateway)
            done = await _reply(conn)
            assert done.status in ("completed", "incomplete"), done
            usages.append(done.usage)
            served.append(await _served_by(sglang_gateway, before))
    assert len(set(served)) == 1, f"turns reached workers {served}"
    for previous, usage in itertools.pairwise(usages):
        cached = usage.input_token_details.cached_tokens
        # The whole earlier prompt (and its reply) is a prefix of the next prompt on the same worker.
        assert cached >= previous.input_tokens, (previous, usage)
        assert cached < usage.input_tokens


async def test_user_audio_reaches_the_worker_through_the_gateway(gateway_server: ServerHandle) -> None:
    speech = (np.sin(np.arange(PCM_RATE) / 5.0) * 3000).astype("<i2").tobytes()  # 1 s at 24 kHz
    async with realtime_client(gateway_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, SHORT_REPLY_TOKENS)
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        assert (await next_event(conn)).type == "session.updated"
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
        await conn.input_audio_buffer.commit()
        done = await _reply(conn)
    # The backend compares the prompt length SGLang reports with the expected audio expansion and fails the
    # response (audio_dropped) when they differ: a completed reply means audio_data crossed the gateway intact.
    assert done.status in ("completed", "incomplete"), done


async def test_cancel_aborts_on_the_worker_running_the_response(
    gateway_server: ServerHandle, sglang_gateway: GatewayRig
) -> None:
    logs = sglang_gateway.worker_logs
    async with realtime_client(gateway_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, LONG_REPLY_TOKENS)
        await _say(conn, "talk for a long time")
        await conn.response.create()
        await _until_audio(conn)
        running = [_live_requests(url) for url in sglang_gateway.worker_urls]
        assert sorted(running) == [0, 1], f"requests per worker: {running}"
        target = running.index(1)
        aborted = [_metric(url, "num_aborted_requests_total") for url in sglang_gateway.worker_urls]
        abort_posts = [_log_lines(path, ABORT_LOG_LINE) for path in logs]
        await conn.response.cancel()
        while (event := await next_event(conn)).type != "response.done":
            assert event.type != "error", event
    assert event.response.status == "cancelled", event.response
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    url = sglang_gateway.worker_urls[target]
    while _metric(url, "num_aborted_requests_total") <= aborted[target]:
        assert asyncio.get_running_loop().time() < deadline, "the worker never counted the abort"
        await asyncio.sleep(POLL_S)
    # Our /abort_request reached that worker, and only it (the gateway named it in x-smg-routed-worker-id),
    # not only SGLang's own abort 2 s after the gateway hung up ...
    assert _log_lines(logs[target], ABORT_LOG_LINE) > abort_posts[target]
    assert _log_lines(logs[1 - target], ABORT_LOG_LINE) == abort_posts[1 - target]
    # ... and nothing is left running anywhere.
    for url in sglang_gateway.worker_urls:
        while _live_requests(url) > 0:
            assert asyncio.get_running_loop().time() < deadline, f"{url} still runs a request"
            await asyncio.sleep(POLL_S)


async def test_gateway_down_fails_the_response_clearly_and_recovers(
    gateway_server: ServerHandle, sglang_gateway: GatewayRig
) -> None:
    async with realtime_client(gateway_server).realtime.connect(model=MODEL) as conn:
        await open_session(conn, SHORT_REPLY_TOKENS)
        await _say(conn, "hello")
        sglang_gateway.gateway.stop()
        down = await _reply(conn)
        assert down.status == "failed", down
        error = down.status_details.error
        assert error.code == "connection_refused", error
        assert sglang_gateway.url.split("//")[1] in error.message, error
        sglang_gateway.restart_gateway()
        up = await _reply(conn)  # the same session, once the gateway is back
        assert up.status in ("completed", "incomplete"), up


async def test_worker_killed_mid_response_fails_it_and_the_next_response_is_served(
    gateway_server: ServerHandle, sglang_gateway: GatewayRig
) -> None:
    spare = 1
    for _attempt in range(FIND_SPARE_ATTEMPTS):
        async with realtime_client(gateway_server).realtime.connect(model=MODEL) as conn:
            await open_session(conn, 1)  # a one-token reply shows which worker this session's key hashes to
            await _say(conn, "which worker are you on?")
            before = _requests(sglang_gateway)
            await _reply(conn)
            if await _served_by(sglang_gateway, before) != spare:
                continue
            await _kill_the_worker_mid_reply(conn, sglang_gateway)
            return
    pytest.fail(f"no session hashed to the spare worker in {FIND_SPARE_ATTEMPTS} tries")


async def _kill_the_worker_mid_reply(conn: Any, rig: GatewayRig) -> None:
    await conn.session.update(session={"type": "realtime", "max_output_tokens": LONG_REPLY_TOKENS})
    assert (await next_event(conn)).type == "session.updated"
    await _say(conn, "now talk for a long time")
    await conn.response.create()
    await _until_audio(conn)
    worker.kill_process(rig.spare.process)
    while (event := await next_event(conn)).type != "response.done":
        assert event.type != "error", event
    failed = event.response
    assert failed.status == "failed", failed
    assert failed.status_details.error.code == "stream_cut", failed
    # The session lives; once the gateway's health check has noticed (1 s interval), the next response goes to
    # the surviving worker.
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while _healthy_workers(rig.url) != 1:
        assert asyncio.get_running_loop().time() < deadline, "the gateway never noticed the dead worker"
        await asyncio.sleep(POLL_S)
    await conn.session.update(session={"type": "realtime", "max_output_tokens": SHORT_REPLY_TOKENS})
    assert (await next_event(conn)).type == "session.updated"
    survivor = rig.worker_urls[0]
    before = _metric(survivor, "num_requests_total")
    served = await _reply(conn)
    assert served.status in ("completed", "incomplete"), served
    assert _metric(survivor, "num_requests_total") > before
