"""``realtime serve`` in a child process, as users run it, for probes that need a whole process.

Open-file limits, signals and the log are per process, so the probes of the connection limits, the drain
and log redaction start the real command (free port, the test session's Token2Wav cache) and read its whole
log, which a thread collects so a chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

READY = re.compile(r"streamvoice ready: demo page http://127\.0\.0\.1:(\d+)/")
START_TIMEOUT_S = 240.0


class ServedProcess:
    """A running ``realtime serve --port 0 ARGS``; stop it with `stop` (or use it as a context manager).

    Args:
        cache: ``STREAMVOICE_CACHE`` (the tiny Token2Wav generated once per test session).
        args: more ``realtime serve`` flags.
        open_files: the child's open-file limit, soft and hard (``ulimit -n``), or None to inherit.
        log_level: ``STREAMVOICE_LOG_LEVEL``.
    """

    def __init__(
        self, cache: Path, args: list[str], *, open_files: int | None = None, log_level: str = "info"
    ) -> None:
        env = {**os.environ, "STREAMVOICE_CACHE": str(cache), "STREAMVOICE_LOG_LEVEL": log_level}

        def limit_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limit_files,
        )
        self._lines: list[str] = []
        self._port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="served-log", daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._port is None:
            self.kill()
            raise AssertionError(f"the server did not start:\n{self.log}")
        self.port = self._port

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            match = READY.search(line)
            if match and self._port is None:
                self._port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        """Everything the server printed so far."""
        return "".join(self._lines)

    def url(self, path: str) -> str:
        """``http://127.0.0.1:PORT`` + ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def get_json(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET ``path`` and parse the JSON answer (any status)."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as reply:
                data: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            data = json.loads(error.read())
        return data

    def metrics(self, key: str | None = None) -> str:
        """The ``/metrics`` text (``key``: the server's API key, if it has one)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(self.url("/metrics"), headers=headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return str(reply.read().decode())

    def terminate(self) -> None:
        """Send SIGTERM (the drain)."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; the log reader is finished afterwards."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """Stop at once (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after a minute."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def __enter__(self) -> ServedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(check: Any, within: float, step: float = 0.05) -> float:
    """Seconds until ``check()`` is true; AssertionError after ``within``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"not true after {within} s")
