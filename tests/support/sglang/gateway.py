"""Start the SGLang Model Gateway (``smg launch``, HTTP mode) in front of running SGLang workers, for tests.

The gateway binary comes from the ``smg`` package of the ``sglang`` extra. Health checks run every second with
one failure enough to mark a worker unhealthy, so a killed worker leaves the rotation within about a second
(a refused connection fails at once; only a hung worker waits for the probe timeout).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.sglang.worker import HOST, RunningProcess, free_port, spawn

READY_TIMEOUT_S = 60.0
HEALTH_INTERVAL_S = 1
HEALTH_TIMEOUT_S = 30
ROUTING_KEY_HEADER = "x-smg-routing-key"


def smg_executable() -> str | None:
    """The ``smg`` launcher next to this interpreter (the project venv), else on PATH; None when missing."""
    beside = Path(sys.executable).with_name("smg")
    if beside.exists():
        return str(beside)
    return shutil.which("smg")


def launch_gateway(
    worker_urls: Sequence[str],
    log_path: Path,
    *,
    policy: str = "consistent_hashing",
    sticky: bool = False,
    port: int | None = None,
) -> RunningProcess:
    """Spawn ``smg launch`` routing over ``worker_urls`` (not yet ready: ``wait_ready("/readiness")``).

    Args:
        worker_urls: base URLs of running SGLang workers.
        log_path: where its output goes.
        policy: the load-balancing policy: ``consistent_hashing`` (the deployment docs/DEPLOY.md recommends:
            the routing-key header pins a session to one worker) or ``cache_aware``, ``round_robin``, ...
        sticky: ``--routing-key-override``: a request carrying the routing-key header goes to the worker that
            key went to before, whatever the policy.
        port: the port to listen on (a restart reuses its predecessor's); None: a free one.
    """
    executable = smg_executable()
    if executable is None:
        raise FileNotFoundError("smg is not installed (install the 'sglang' extra)")
    port = port or free_port()
    command = [
        executable, "launch",
        "--host", HOST,
        "--port", str(port),
        "--prometheus-host", HOST,
        "--prometheus-port", str(free_port()),
        "--worker-urls", *worker_urls,
        "--policy", policy,
        "--health-check-interval-secs", str(HEALTH_INTERVAL_S),
        "--health-failure-threshold", "1",
        # SGLang's /health generates one token; a cold CPU worker (warm-up skipped) can take longer than smg's
        # 5 s default, and a failed first probe costs a 30 s registration retry.
        "--health-check-timeout-secs", str(HEALTH_TIMEOUT_S),
        "--shutdown-grace-period-secs", "1",  # tests stop it to simulate an outage
        "--log-level", "info",
    ]  # fmt: skip
    if sticky:
        command.append("--routing-key-override")
    return spawn("smg gateway", command, log_path, f"http://{HOST}:{port}", dict(os.environ))
