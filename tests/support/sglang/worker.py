"""Start and stop real tiny SGLang servers on this CPU rig (shared by the one-server and the gateway fixtures).

A worker is upstream SGLang 0.5.23 running our plugin on the CPU with random (``--load-format dummy``) weights:
``SGLANG_USE_CPU_ENGINE=1 python -m sglang.launch_server --device cpu --model-path DIR --load-format dummy
--max-total-tokens 8192``, on a free 127.0.0.1 port, with the test-only ``sgl_kernel`` stand-in
(``tests/support/sglang/standin/sitecustomize.py``) switched on for its processes. Without
``--max-total-tokens`` SGLang would size its KV cache from free memory (15 GB on these machines).

Every process is started in its own session (process group) so `stop_process` takes its scheduler and
detokenizer children down with it. Every wait is bounded; failures raise `LaunchError` with the log tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.sglang.tiny_checkpoint import TinyCheckpoint

HOST = "127.0.0.1"
STANDIN_DIR = Path(__file__).resolve().parent / "standin"
STANDIN_SWITCH = "STREAMVOICE_SGL_KERNEL_STANDIN"
MAX_TOTAL_TOKENS = 8192
STARTUP_TIMEOUT_S = float(os.environ.get("STREAMVOICE_SGLANG_STARTUP_TIMEOUT", "420"))
POLL_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 60
# Bias on every <audio_N> code (logits of the random-weight model are ~0): about 3/4 of the sampled ids at
# temperature 0.7 become speech codes, so chain tests hear Token2Wav output.
AUDIO_LOGIT_BIAS = 3.0


class LaunchError(RuntimeError):
    """A server exited early or was not ready in time; the message carries the tail of its log."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (for failure messages)."""
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


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Stop a process started with ``start_new_session=True`` and its group: SIGTERM, then SIGKILL."""
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


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process group at once (a crash, not a shutdown), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


def audio_bias_params(checkpoint: TinyCheckpoint) -> str:
    """``--preferred-sampling-params`` JSON that biases sampling towards the ``<audio_N>`` ids."""
    layout = checkpoint.layout
    bias = {str(layout.audio_token_id(code)): AUDIO_LOGIT_BIAS for code in range(layout.audio_codes)}
    return json.dumps({"logit_bias": bias}, separators=(",", ":"))


@dataclass
class RunningProcess:
    """A launched server process (SGLang worker or gateway).

    Attributes:
        name: what it is, for messages (``SGLang worker``, ``smg gateway``).
        url: base URL, e.g. ``http://127.0.0.1:40123``.
        process: the process-group leader.
        log_path: its combined stdout/stderr.
        started: `time.monotonic()` at spawn.
    """

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return tail(self.log_path, lines)

    def wait_ready(self, probe_path: str, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Poll ``GET probe_path`` until it answers 200; return seconds since spawn.

        Raises:
            LaunchError: the process exited, or ``timeout_s`` passed (the process is then stopped).
        """
        deadline = self.started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LaunchError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready.\n"
                    f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{self.url}{probe_path}", timeout=PROBE_TIMEOUT_S).status_code
                    == httpx.codes.OK
                ):
                    return time.monotonic() - self.started
            time.sleep(POLL_INTERVAL_S)
        stop_process(self.process)
        raise LaunchError(
            f"{self.name} not ready within {timeout_s:.0f} s "
            f"(set STREAMVOICE_SGLANG_STARTUP_TIMEOUT to wait longer).\n"
            f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL after `STOP_TIMEOUT_S`."""
        stop_process(self.process)


def spawn(name: str, command: Sequence[str], log_path: Path, url: str, env: dict[str, str]) -> RunningProcess:
    """Start ``command`` in its own session, logging to ``log_path``."""
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return RunningProcess(name=name, url=url, process=process, log_path=log_path, started=started)


def launch_worker(checkpoint: TinyCheckpoint, log_path: Path, *, metrics: bool = True) -> RunningProcess:
    """Spawn one tiny SGLang worker (not yet ready: call ``wait_ready("/model_info")``).

    It streams cumulative ``output_ids`` (the default), skips the warm-up request, biases sampling towards speech
    codes, and with ``metrics`` exposes ``/metrics`` (``sglang:num_aborted_requests_total`` and friends).
    """
    port = free_port()
    command = [
        sys.executable, "-m", "sglang.launch_server",
        "--device", "cpu",
        "--model-path", str(checkpoint.path),
        "--load-format", "dummy",
        "--max-total-tokens", str(MAX_TOTAL_TOKENS),
        "--host", HOST,
        "--port", str(port),
        "--random-seed", "0",
        "--skip-server-warmup",
        "--mm-processor-worker-num", "1",
        "--preferred-sampling-params", audio_bias_params(checkpoint),
        # Without it an idle scheduler polls its sockets in a busy loop, one whole core per worker: with the
        # session's two workers up, every later test (torch included) ran on what was left of 2 cores.
        "--sleep-on-idle",
    ]  # fmt: skip
    if metrics:
        command.append("--enable-metrics")
    return spawn("SGLang worker", command, log_path, f"http://{HOST}:{port}", sglang_env())
