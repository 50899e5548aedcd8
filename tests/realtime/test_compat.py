"""The OpenAI-compatibility suite: real clients from the client virtualenv against the server over its socket.

``.venv-clients`` (``make clients``, packages in tests/support/clients/requirements.txt) holds the newest
``openai``, ``openai-agents``, ``pipecat-ai`` and ``livekit-agents``. Each client program in tests/support/clients/
drives one of them through its main flows and prints one JSON report line; these tests assert on it: no
validation failures in the client's own models, no ``error`` event the flow did not provoke on purpose (the
provoked ones are checked by code), and what each scene observed. Real clients end their session on an error
they do not expect, so an unexpected error here is a broken client in the field (docs/PROTOCOL.md §8.2).

Sections: the ``openai`` SDK (Realtime GA and beta; audio transcriptions and translations in every format),
the Agents SDK, pipecat, LiveKit, and transcription sessions (pipecat's ``OpenAIRealtimeSTTService``, the
``openai`` SDK GA and beta, the Agents SDK's voice STT, LiveKit's realtime STT). A client package the
venv lacks skips its tests with the reason: `make clients` could not install it (no package index).
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


# what each section needs from the client venv: the Python that must run there
_PROBES = {
    "openai>=3 / openai-agents": "import agents, openai; assert int(openai.__version__.split('.')[0]) >= 3",
    "pipecat-ai[openai]": "import pipecat.services.openai.realtime.llm",
    "livekit-agents[openai]": "import livekit.plugins.openai.realtime",
    # the voice pipeline's numpy and websockets come with pipecat-ai / livekit-agents and openai[realtime]
    "openai-agents voice": "import agents.voice",
}


def _client_venv_problems() -> dict[str, str]:
    """Why each section cannot run (by the package it lacks); one client-venv process probes them all."""
    if not CLIENT_PYTHON.exists():
        missing = f"{CLIENT_PYTHON} is missing: `make clients` could not make it (it needs the package index)"
        return dict.fromkeys(_PROBES, missing)
    program = (
        "import json, traceback\nfailed = {}\n"
        f"for name, probe in {_PROBES!r}.items():\n"
        "    try:\n        exec(probe)\n"
        "    except BaseException as exc:\n        failed[name] = repr(exc)[-300:]\n"
        "print(json.dumps(failed))"
    )
    result = subprocess.run([str(CLIENT_PYTHON), "-c", program], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        return dict.fromkeys(_PROBES, f".venv-clients does not run: {result.stderr.strip()[-300:]}")
    failed: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        name: f".venv-clients lacks {name}: `make clients` could not install it (no package index?): {why}"
        for name, why in failed.items()
    }


_PROBLEMS = _client_venv_problems()
_OPENAI, _PIPECAT, _LIVEKIT, _AGENTS_VOICE = (_PROBLEMS.get(name) for name in _PROBES)
needs_openai = pytest.mark.skipif(_OPENAI is not None, reason=_OPENAI or "")
needs_pipecat = pytest.mark.skipif(_PIPECAT is not None, reason=_PIPECAT or "")
needs_livekit = pytest.mark.skipif(_LIVEKIT is not None, reason=_LIVEKIT or "")
needs_agents_voice = pytest.mark.skipif(_AGENTS_VOICE is not None, reason=_AGENTS_VOICE or "")


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


# -- the openai SDK ------------------------------------------------------------------------------------------


@needs_openai
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


@needs_openai
def test_sdk_audio_transcriptions_and_translations_in_every_format(
    server: ServerHandle, tmp_path: Path
) -> None:
    wav, pcm = _speech_wav(tmp_path)
    checks = _run("sdk_audio.py", server.http_url("/v1"), str(wav))["checks"]
    want = expected_transcript(pcm)
    for name in ("transcriptions", "translations"):
        assert checks[f"{name}_json"]["text"] == want  # the synthetic stand-in words are English already
        assert checks[f"{name}_text"] == {"kind": "str", "text": want}
        verbose = checks[f"{name}_verbose_json"]
        assert verbose["kind"] == (
            "TranscriptionVerbose" if name == "transcriptions" else "TranslationVerbose"
        )
        assert verbose["language"] == "english" and verbose["segments"] and verbose["text"] == want
        segment = verbose["segments"][0]
        assert segment["start"] < segment["end"] <= verbose["duration"] and segment["text"] == want
        assert (
            checks[f"{name}_srt"]["text"].startswith("1\n00:00:00,") and want in checks[f"{name}_srt"]["text"]
        )
        assert checks[f"{name}_vtt"]["text"].startswith("WEBVTT\n\n00:00:00.")
    assert checks["stream"][-1] == "transcript.text.done" and "transcript.text.delta" in checks["stream"]


# -- the Agents SDK ------------------------------------------------------------------------------------------


@needs_openai
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
    assert checks["missing_codes"] == ["item_retrieve_invalid_item_id", "item_delete_invalid_item_id"]
    assert len(checks["provoked_errors"]) == 2 and checks["missing_then_status"] == "completed"


# -- pipecat -------------------------------------------------------------------------------------------------


@needs_pipecat
def test_pipecat_realtime_llm_service(
    server: ServerHandle, slow_server: ServerHandle, tmp_path: Path
) -> None:
    wav, _pcm = _speech_wav(tmp_path)
    report = _run(
        "pipecat_realtime.py",
        server.ws_url(),
        server.ws_url(index=APP_TOOL_CALL),
        slow_server.ws_url(),
        str(wav),
    )
    checks = report["checks"]
    assert checks["text_status"] == "completed" and checks["text_audio_bytes"] > 0
    assert checks["text_voice"] == "marin"  # the name pipecat set comes back
    # a retrieve of a missing id fails only that call (pipecat matches its rci_<id> event id); the loop lives
    assert (
        checks["retrieve_missing"].startswith("raised: Error retrieving item")
        and checks["retrieve_missing_loop_alive"]
    )
    assert [e["code"] for e in checks["provoked_errors"]] == ["item_retrieve_invalid_item_id"]
    # a camera frame is an input_image item (accepted, stored, not seen by the model)
    assert checks["video_frame_item"] == [{"type": "input_image", "detail": "auto"}]
    assert checks["audio_status"] == "completed" and checks["audio_speech_started"] >= 1
    assert checks["audio_transcript"]  # the turn the server VAD committed (with its padding), transcribed
    assert checks["tool_calls"] == ["Paris"] and "sunny" in checks["tool_output"]
    assert checks["barge_in_status"] == "cancelled" and checks["barge_in_reason"] == "turn_detected"
    assert checks["barge_in_truncated"] >= 1
    for scene in ("main", "tool", "barge_in"):
        assert checks[f"{scene}_receive_loop_alive"], scene


# -- LiveKit -------------------------------------------------------------------------------------------------


@needs_livekit
def test_livekit_realtime_model(server: ServerHandle, slow_server: ServerHandle, tmp_path: Path) -> None:
    wav, _pcm = _speech_wav(tmp_path)
    report = _run(
        "livekit_realtime.py",
        server.http_url("/v1"),
        server.http_url("/v1", index=APP_TOOL_CALL),
        slow_server.http_url("/v1"),
        str(wav),
    )
    checks = report["checks"]
    assert (
        checks["text_status"] == "completed" and checks["text_audio_bytes"] > 0 and checks["text_transcript"]
    )
    assert checks["text_voice"] == "marin"
    assert checks["video_frame_item"][0]["type"] == "input_image"
    codes = sorted(e["code"] for e in checks["provoked_errors"])
    assert codes == ["item_delete_invalid_item_id", "item_retrieve_invalid_item_id"]
    assert all(e["recoverable"] for e in checks.get("plugin_errors", []))  # reported, never fatal
    assert checks["audio_status"] == "completed" and checks["audio_transcript"]
    assert checks["server_generations"] >= 1
    assert checks["tool_calls"] == ["get_weather"] and "Paris" in checks["tool_arguments"]
    assert checks["barge_in_status"] == "cancelled" and checks["barge_in_reason"] == "turn_detected"


# -- transcription sessions (docs/PROTOCOL.md §4.8) -------------------------------------------------------------
# Each client opens `?intent=transcription` its own way and configures the session with its own update; the
# transcripts must be the server's transcription of the audio each commit held, so the tests assert what can be
# computed (every transcript non-empty, GA deltas spelling the transcript, OpenAI's event order per turn).

_GA_TURN = [
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.completed",
]
_BETA_TURN = [
    "input_audio_buffer.committed",
    "conversation.item.created",
    "conversation.item.input_audio_transcription.completed",
]
_VAD = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]


@needs_pipecat
def test_pipecat_realtime_stt_service_transcribes_a_wav(server: ServerHandle, tmp_path: Path) -> None:
    wav, pcm = _speech_wav(tmp_path)
    checks = _run("pipecat_stt.py", server.ws_url(), str(wav))["checks"]
    # pipecat's default: its local VAD ends the turn and the service commits the buffer
    session = checks["local_vad_session"]
    assert session["type"] == "transcription" and session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper", "language": "en"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert checks["local_vad_events"] == ["session.created", "session.updated", *_GA_TURN]
    # the whole WAV plus 0.3 s of silence was committed: its transcript is computable
    want = expected_transcript(pcm + bytes(int(0.3 * PCM_RATE) * 2))
    assert checks["local_vad_transcript"] == want and checks["local_vad_frames"] == [want]
    assert checks["local_vad_interims"] >= 1  # the deltas reached pipecat as interim transcriptions
    # server VAD: the server ends the turn and commits it
    assert checks["server_vad_events"] == ["session.created", "session.updated", *_VAD, *_GA_TURN]
    assert checks["server_vad_transcript"] and checks["server_vad_frames"] == [
        checks["server_vad_transcript"]
    ]
    for scene in ("local_vad", "server_vad"):
        assert checks[f"{scene}_receive_loop_alive"], scene


@needs_openai
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_openai_sdk_transcription_session(server: ServerHandle, tmp_path: Path, dialect: str) -> None:
    wav, pcm = _speech_wav(tmp_path)
    report = _run("sdk_transcription_session.py", server.http_url("/v1"), str(wav), dialect)
    checks = report["checks"]
    turn = _GA_TURN if dialect == "ga" else _BETA_TURN
    if dialect == "ga":
        assert (
            checks["first_event"] == "session.created"
            and checks["created_session"]["type"] == "transcription"
        )
        transcription = checks["updated_session"]["audio"]["input"]["transcription"]
    else:
        assert checks["first_event"] == "transcription_session.created"
        transcription = checks["updated_session"]["input_audio_transcription"]
    assert transcription == {"model": "gpt-4o-transcribe", "language": "en"}
    client_commit, vad_commit = checks["client_commit"], checks["vad_commit"]
    assert client_commit["order"] == turn and vad_commit["order"] == [*_VAD, *turn]
    assert client_commit["transcript"] == expected_transcript(pcm)
    for committed in (client_commit, vad_commit):
        assert committed["transcript"] and committed["deltas_join"] == committed["transcript"]
        assert committed["deltas"] >= 1 and committed["same_item"] and committed["usage_type"] == "tokens"
    assert checks["response_refused"] == "invalid_parameter" and len(checks["provoked_errors"]) == 1
    assert checks["after_refusal"] == ["input_audio_buffer.cleared"]  # no response was started


@needs_agents_voice
def test_agents_voice_stt_transcription_session(server: ServerHandle, tmp_path: Path) -> None:
    wav, _pcm = _speech_wav(tmp_path)
    turns = _run("agents_stt.py", server.http_url("/v1"), str(wav))["checks"]["turns"]
    # the VAD-committed turn, then the one the SDK's own final commit sends (speech the VAD had not ended; its
    # start keeps the VAD's prefix padding, so its exact audio is the VAD's to decide)
    assert len(turns) == 2 and all(turns)


@needs_livekit
def test_livekit_realtime_stt(server: ServerHandle, tmp_path: Path) -> None:
    wav, _pcm = _speech_wav(tmp_path)
    checks = _run("livekit_stt.py", server.http_url("/v1"), str(wav))["checks"]
    events = checks["events"]
    assert events[0] == "START_OF_SPEECH" and "END_OF_SPEECH" in events and events[-1] == "RECOGNITION_USAGE"
    assert checks["finals"] and all(checks["finals"])
