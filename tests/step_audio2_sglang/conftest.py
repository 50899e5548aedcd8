"""Fixtures for the real-SGLang tests: a tiny Step-Audio-2 checkpoint and ONE SGLang server per test session.

The server is upstream SGLang 0.5.23 running our plugin on the CPU with random (``--load-format dummy``) weights,
started by `tests.support.sglang.worker.launch_worker` (which the gateway fixtures in ``tests/gateway`` share).

Every test here is marked ``sglang`` and ``slow``; they are skipped (with the reason) only when ``sglang`` is not
installed. A server that fails to start is a test failure showing the tail of its log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.sglang import gateway, worker
from tests.support.sglang.tiny_checkpoint import TinyCheckpoint, write_tiny_checkpoint, write_tiny_weights

MAX_TOTAL_TOKENS = worker.MAX_TOTAL_TOKENS
LOG_TAIL_LINES = worker.LOG_TAIL_LINES

ENGINE_PROBE_TIMEOUT_S = float(os.environ.get("STREAMVOICE_SGLANG_ENGINE_TIMEOUT", "600"))
ENGINE_PROBE_FIXTURE = "engine_probe"
GATEWAY_FIXTURE = "sglang_gateway"
SPARE_WORKER_FIXTURE = "gateway_spare_worker"

SGLANG_MISSING = importlib.util.find_spec("sglang") is None
SKIP_REASON = "sglang is not installed (install the 'sglang' extra: pip install -e '.[sglang]')"
_start_engine_probe_early = False
_start_spare_worker_early = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``sglang`` tests with the reason when sglang is missing; note whether the Engine probe and the
    gateway's spare worker will be needed (they then start together with the first SGLang server)."""
    global _start_engine_probe_early, _start_spare_worker_early
    for item in items:
        if item.get_closest_marker("sglang") is None:
            continue
        if SGLANG_MISSING:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
            continue
        fixtures = getattr(item, "fixturenames", ())
        _start_engine_probe_early |= ENGINE_PROBE_FIXTURE in fixtures
        _start_spare_worker_early |= GATEWAY_FIXTURE in fixtures


@dataclass(frozen=True)
class SGLangServer:
    """A running SGLang server.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:40123``.
        checkpoint: the tiny checkpoint it serves.
        log_path: its combined stdout/stderr.
        startup_s: seconds from spawn to the first answered ``/model_info``.
    """

    url: str
    checkpoint: TinyCheckpoint
    log_path: Path
    startup_s: float

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (for failure messages)."""
        return worker.tail(self.log_path, lines)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """The tiny Step-Audio-2 checkpoint directory (config + tokenizer; dummy weights come from SGLang)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_step_audio_2"))


@dataclass
class EngineProbe:
    """The in-process Engine probe (`tests.support.sglang.engine_probe`), running in its own process.

    It starts as soon as a session selects a test that needs it, before the HTTP server, so the two start-ups
    overlap; `records` waits for it.
    """

    process: subprocess.Popen[str]
    log_path: Path
    started: float
    checkpoint: TinyCheckpoint

    def records(self) -> tuple[dict[str, dict[str, object]], float]:
        """The probe's JSON records by case, and its wall time; fails the test with the log if it failed."""
        try:
            stdout, _ = self.process.communicate(timeout=ENGINE_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.stop_process(self.process)
            pytest.fail(f"Engine probe timed out.\n{worker.tail(self.log_path)}")
        if self.process.returncode != 0:
            pytest.fail(f"Engine probe exited {self.process.returncode}.\n{worker.tail(self.log_path)}")
        records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return {str(record["case"]): record for record in records}, time.monotonic() - self.started


@pytest.fixture(scope="session")
def engine_probe(
    tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProbe]:
    """Start `tests.support.sglang.engine_probe` (our sglang-engine backend on ``sglang.Engine``) in the background.

    Its checkpoint has real (random, seeded) weights under the released key names, so the Engine loads them
    through the plugin's ``load_weights``; the HTTP server keeps ``--load-format dummy``.
    """
    if SGLANG_MISSING:
        pytest.skip(SKIP_REASON)
    folder = tmp_path_factory.mktemp("sglang_engine")
    checkpoint = write_tiny_checkpoint(folder / "checkpoint", tiny_checkpoint.layout)
    write_tiny_weights(checkpoint)
    log_path = folder / "engine.log"
    command = [sys.executable, "-m", "tests.support.sglang.engine_probe", str(checkpoint.path)]
    root = Path(__file__).resolve().parents[2]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, env=worker.sglang_env(), cwd=root, text=True,
            start_new_session=True,
        )  # fmt: skip
    probe = EngineProbe(process=process, log_path=log_path, started=time.monotonic(), checkpoint=checkpoint)
    try:
        yield probe
    finally:
        worker.stop_process(process)


@pytest.fixture(scope="session")
def sglang_server(
    tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SGLangServer]:
    """ONE real SGLang server (cumulative ``output_ids`` streaming, the default) for the whole session."""
    if SGLANG_MISSING:
        pytest.skip(SKIP_REASON)
    if _start_engine_probe_early:
        request.getfixturevalue(ENGINE_PROBE_FIXTURE)  # overlap the start-ups
    if _start_spare_worker_early:
        request.getfixturevalue(SPARE_WORKER_FIXTURE)
    server = worker.launch_worker(tiny_checkpoint, tmp_path_factory.mktemp("sglang_server") / "server.log")
    try:
        try:
            startup_s = server.wait_ready("/model_info")
        except worker.LaunchError as exc:
            pytest.fail(str(exc))
        yield SGLangServer(
            url=server.url, checkpoint=tiny_checkpoint, log_path=server.log_path, startup_s=startup_s
        )
    finally:
        server.stop()


@dataclass
class GatewayRig:
    """The SGLang Model Gateway (``smg``) in front of two tiny SGLang workers: the session's `sglang_server` and
    one more that the rig owns (`spare`, which a fault test may kill).

    Attributes:
        gateway: the running gateway (replaced by `restart_gateway`).
        worker_urls: both workers' base URLs; ``worker_urls[1]`` is the spare.
        spare: the worker process this rig owns.
        checkpoint: the tiny checkpoint both serve.
        startup_s: seconds from the spare's spawn to a gateway reporting both workers ready.
        worker_logs: both workers' logs, in `worker_urls` order.
        log_dir: where the rig's own logs go.
    """

    gateway: worker.RunningProcess
    worker_urls: tuple[str, str]
    worker_logs: tuple[Path, Path]
    spare: worker.RunningProcess
    checkpoint: TinyCheckpoint
    startup_s: float
    log_dir: Path

    @property
    def url(self) -> str:
        """The gateway's base URL (what ``--sglang-url`` points at)."""
        return self.gateway.url

    def restart_gateway(self) -> float:
        """Start a new gateway on the same port (after the old one was stopped); seconds until it is ready."""
        port = int(self.gateway.url.rsplit(":", 1)[1])
        self.gateway = gateway.launch_gateway(
            self.worker_urls, self.log_dir / "gateway-restarted.log", port=port
        )
        return _wait_gateway(self.gateway)


def _wait_gateway(process: worker.RunningProcess) -> float:
    try:
        return process.wait_ready("/readiness", gateway.READY_TIMEOUT_S)
    except worker.LaunchError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def gateway_spare_worker(
    tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[worker.RunningProcess]:
    """The gateway's second SGLang worker, spawned (not waited for) so it starts alongside `sglang_server`."""
    if SGLANG_MISSING:
        pytest.skip(SKIP_REASON)
    spare = worker.launch_worker(tiny_checkpoint, tmp_path_factory.mktemp("spare_worker") / "worker.log")
    try:
        yield spare
    finally:
        spare.stop()


@pytest.fixture(scope="session")
def sglang_gateway(
    tiny_checkpoint: TinyCheckpoint,
    gateway_spare_worker: worker.RunningProcess,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[GatewayRig]:
    """``smg launch --policy consistent_hashing`` over the session's SGLang server and a second worker."""
    if gateway.smg_executable() is None:
        pytest.fail("smg is not installed: install the 'sglang' extra (pip install -e '.[sglang]')")
    spare = gateway_spare_worker
    first: SGLangServer = request.getfixturevalue("sglang_server")
    try:
        spare.wait_ready("/model_info")
    except worker.LaunchError as exc:
        pytest.fail(str(exc))
    log_dir = tmp_path_factory.mktemp("sglang_gateway")
    urls = (first.url, spare.url)
    rig = GatewayRig(
        gateway=gateway.launch_gateway(urls, log_dir / "gateway.log"),
        worker_urls=urls,
        worker_logs=(first.log_path, spare.log_path),
        spare=spare,
        checkpoint=tiny_checkpoint,
        startup_s=0.0,
        log_dir=log_dir,
    )
    try:
        _wait_gateway(rig.gateway)
        rig.startup_s = time.monotonic() - spare.started
        yield rig
    finally:
        rig.gateway.stop()
