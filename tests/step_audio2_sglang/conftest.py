"""Fixtures for the real-SGLang tests: a tiny Step-Audio-2 checkpoint and ONE SGLang server per test session.

The server is upstream SGLang 0.5.23 running our plugin on the CPU with random (``--load-format dummy``) weights:
``SGLANG_USE_CPU_ENGINE=1 python -m sglang.launch_server --device cpu --model-path DIR --load-format dummy
--max-total-tokens 8192``, on a free 127.0.0.1 port, with the test-only ``sgl_kernel`` stand-in
(``standin/sitecustomize.py``) switched on for its processes. Without ``--max-total-tokens`` SGLang would size
its KV cache from free memory (15 GB on these machines).

Every test here is marked ``sglang`` and ``slow``; they are skipped (with the reason) only when ``sglang`` is not
installed. A server that fails to start is a test failure showing the tail of its log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.sglang.tiny_checkpoint import TinyCheckpoint, write_tiny_checkpoint, write_tiny_weights

STANDIN_DIR = Path(__file__).resolve().parents[1] / "support" / "sglang" / "standin"
STANDIN_SWITCH = "STREAMVOICE_SGL_KERNEL_STANDIN"
MAX_TOTAL_TOKENS = 8192
STARTUP_TIMEOUT_S = float(os.environ.get("STREAMVOICE_SGLANG_STARTUP_TIMEOUT", "420"))
POLL_INTERVAL_S = 0.5
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 60
HOST = "127.0.0.1"

# Bias on every <audio_N> code (logits of the random-weight model are ~0): about 3/4 of the sampled ids at
# temperature 0.7 become speech codes, so the chain test hears Token2Wav output.
AUDIO_LOGIT_BIAS = 3.0
ENGINE_PROBE_TIMEOUT_S = float(os.environ.get("STREAMVOICE_SGLANG_ENGINE_TIMEOUT", "600"))
ENGINE_PROBE_FIXTURE = "engine_probe"

SGLANG_MISSING = importlib.util.find_spec("sglang") is None
SKIP_REASON = "sglang is not installed (install the 'sglang' extra: pip install -e '.[sglang]')"
_start_engine_probe_early = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``sglang`` tests with the reason when sglang is missing; note whether the Engine probe will run."""
    global _start_engine_probe_early
    for item in items:
        if item.get_closest_marker("sglang") is None:
            continue
        if SGLANG_MISSING:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        elif ENGINE_PROBE_FIXTURE in getattr(item, "fixturenames", ()):
            _start_engine_probe_early = True


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
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sglang_env() -> dict[str, str]:
    """Environment for SGLang processes on this CPU rig: CPU engine + the sgl_kernel stand-in."""
    env = dict(os.environ)
    # `make test` debugs OUR event loops; SGLang's own loops would only get slower and noisier.
    env.pop("PYTHONASYNCIODEBUG", None)
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    env[STANDIN_SWITCH] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STANDIN_DIR), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """The tiny Step-Audio-2 checkpoint directory (config + tokenizer; dummy weights come from SGLang)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_step_audio_2"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (it was started in its own session), politely then forcefully."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


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
            _stop(self.process)
            pytest.fail(f"Engine probe timed out.\n{_tail(self.log_path, LOG_TAIL_LINES)}")
        if self.process.returncode != 0:
            pytest.fail(
                f"Engine probe exited {self.process.returncode}.\n{_tail(self.log_path, LOG_TAIL_LINES)}"
            )
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
            command, stdout=subprocess.PIPE, stderr=log, env=sglang_env(), cwd=root, text=True,
            start_new_session=True,
        )  # fmt: skip
    probe = EngineProbe(process=process, log_path=log_path, started=time.monotonic(), checkpoint=checkpoint)
    try:
        yield probe
    finally:
        _stop(process)


def _audio_bias(checkpoint: TinyCheckpoint) -> str:
    layout = checkpoint.layout
    bias = {str(layout.audio_token_id(code)): AUDIO_LOGIT_BIAS for code in range(layout.audio_codes)}
    return json.dumps({"logit_bias": bias}, separators=(",", ":"))


@pytest.fixture(scope="session")
def sglang_server(
    tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SGLangServer]:
    """ONE real SGLang server (cumulative ``output_ids`` streaming, the default) for the whole session."""
    if SGLANG_MISSING:
        pytest.skip(SKIP_REASON)
    if _start_engine_probe_early:
        request.getfixturevalue(ENGINE_PROBE_FIXTURE)  # overlap the two start-ups
    port = free_port()
    log_path = tmp_path_factory.mktemp("sglang_server") / "server.log"
    command = [
        sys.executable, "-m", "sglang.launch_server",
        "--device", "cpu",
        "--model-path", str(tiny_checkpoint.path),
        "--load-format", "dummy",
        "--max-total-tokens", str(MAX_TOTAL_TOKENS),
        "--host", HOST,
        "--port", str(port),
        "--random-seed", "0",
        "--skip-server-warmup",
        "--mm-processor-worker-num", "1",
        "--enable-metrics",  # the chain test reads sglang:num_aborted_requests_total
        "--preferred-sampling-params", _audio_bias(tiny_checkpoint),
    ]  # fmt: skip
    url = f"http://{HOST}:{port}"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=sglang_env(), start_new_session=True
        )
    try:
        startup_s = _wait_ready(process, url, log_path, started)
        yield SGLangServer(url=url, checkpoint=tiny_checkpoint, log_path=log_path, startup_s=startup_s)
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, started: float) -> float:
    deadline = started + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"SGLang server exited with code {process.returncode} before it was ready.\n"
                f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{_tail(log_path, LOG_TAIL_LINES)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/model_info", timeout=2.0).status_code == httpx.codes.OK:
                return time.monotonic() - started
        time.sleep(POLL_INTERVAL_S)
    _stop(process)
    pytest.fail(
        f"SGLang server not ready within {STARTUP_TIMEOUT_S:.0f} s "
        f"(set STREAMVOICE_SGLANG_STARTUP_TIMEOUT to wait longer).\n"
        f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{_tail(log_path, LOG_TAIL_LINES)}"
    )
