"""Real client programs from the client virtualenv (``.venv-clients``: the newest ``openai`` and
``openai-agents``, made by ``make clients``) against the server over its socket.

The programs live in tests/support/clients/ and print one JSON report line; these tests assert on it: no
validation failures in the client's own models, no error events we did not provoke, and what each scene
observed. Without the client venv (no network when it was made) the tests skip, saying so.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.realtime.conftest import APP_TOOL_CALL
from tests.realtime.session.test_transcription import PCM_RATE, expected_transcript, speech_pcm
from tests.support.server_harness import ServerHandle

REPO = Path(__file__).resolve().parents[2]
CLIENT_PYTHON = REPO / ".venv-clients" / "bin" / "python"
CLIENTS = REPO / "tests" / "support" / "clients"
RUN_TIMEOUT_S = 300


def _client_venv_problem() -> str | None:
    if not CLIENT_PYTHON.exists():
        return f"{CLIENT_PYTHON} is missing: run `make clients` (needs the package index)"
    probe = "import agents, openai; assert int(openai.__version__.split('.')[0]) >= 3, openai.__version__"
    result = subprocess.run([str(CLIENT_PYTHON), "-c", probe], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return f".venv-clients lacks openai>=3 / openai-agents: {result.stderr.strip()[-300:]}"
    return None


_PROBLEM = _client_venv_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")


def _speech_wav(tmp_path: Path) -> tuple[Path, bytes]:
    pcm = speech_pcm(2.0)
    path = tmp_path / "speech.wav"
    sf.write(path, np.frombuffer(pcm, dtype="<i2"), PCM_RATE, subtype="PCM_16")
    return path, pcm


def _run(program: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(CLIENT_PYTHON), str(CLIENTS / program), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=CLIENTS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["validation_errors"] == [], report
    assert report["error_events"] == [], report
    return report


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_newest_openai_sdk(server: ServerHandle, tmp_path: Path, dialect: str) -> None:
    wav, pcm = _speech_wav(tmp_path)
    report = _run("sdk_realtime.py", server.http_url("/v1"), str(wav), dialect)
    assert int(report["client"]["openai"].split(".")[0]) >= 3
    checks = report["checks"]
    want = expected_transcript(pcm)
    assert checks["transcription_echo"] == {"model": "step-audio-2-mini", "language": "en"}
    assert checks["text_turn_status"] == checks["audio_turn_status"] == "completed"
    assert checks["transcript"] == checks["deltas_join"] == checks["retrieved_transcript"] == want
    assert checks["transcript_item_is_committed_item"] is True


def test_agents_realtime_session(server: ServerHandle, slow_server: ServerHandle, tmp_path: Path) -> None:
    wav, _ = _speech_wav(tmp_path)
    report = _run(
        "agents_session.py",
        server.ws_url(),
        server.ws_url(index=APP_TOOL_CALL),
        slow_server.ws_url(),
        str(wav),
    )
    checks = report["checks"]
    assert checks["text_status"] == "completed" and checks["text_audio_events"] > 0
    assert checks["audio_status"] == "completed" and checks["audio_transcription_deltas"] >= 1
    assert checks["audio_transcript"] and checks["history_user_transcripts"][-1] == checks["audio_transcript"]
    assert checks["tool_calls"] == ["Paris"] and checks["tool_session_tools"] == ["get_weather"]
    assert checks["interrupt_truncated"] == 1 and checks["interrupt_status"] == "cancelled"
