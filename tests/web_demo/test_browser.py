"""The browser demo in a real browser: Debian's chromium driven by Playwright against `realtime serve`.

The server runs as a subprocess exactly as a user starts it (embedded default: synthetic backend + tiny
random-weight decoder); chromium's fake media device plays tests/data/mic_hello.wav as the microphone.
A screenshot of the page mid-conversation is saved under artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.browser import CHROMIUM, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STREAMVOICE_ARTIFACTS", REPO / "artifacts"))
SERVER_START_TIMEOUT_S = 180.0
MIC = REPO / "tests" / "data" / "mic_hello.wav"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not healthy after {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    work = tmp_path_factory.mktemp("browser-server")
    log_path = work / "server.log"
    env = dict(os.environ, STREAMVOICE_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    """Playwright's sync API, once per module (it cannot be started twice in one thread)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it with apt-get as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: object) -> Iterator[object]:
    with chromium(playwright, MIC) as browser:
        yield browser


@pytest.fixture(scope="module")
def caller_browser(playwright: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A browser whose microphone says "hello", then is silent for 3 s, over and over (the file loops): the
    server VAD hears a turn end, and the answer plays before the next "hello" interrupts it."""
    samples, rate = sf.read(MIC, dtype="int16")
    padded = tmp_path_factory.mktemp("mic") / "hello_then_silence.wav"
    sf.write(padded, np.concatenate([samples, np.zeros(3 * rate, dtype=np.int16)]), rate, subtype="PCM_16")
    with chromium(playwright, padded) as browser:
        yield browser


def open_demo(browser: object, url: str) -> tuple[Any, Any, list[str]]:
    """A new context and page on ``url``, connected; the console errors it logs are collected."""
    context = browser.new_context(permissions=["microphone"])  # type: ignore[attr-defined]
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("#status[data-state=open]", timeout=30_000)
    return context, page, console_errors


def test_talk_type_and_interrupt_in_a_real_browser(server_url: str, browser: object) -> None:
    context, page, console_errors = open_demo(browser, server_url + "/?transport=websocket")
    assert page.evaluate("window.demo.transport") == "websocket"
    # the page and everything it loads (the favicon included) arrive without a failed request
    assert not [e for e in console_errors if "Failed to load resource" in e], console_errors
    # The embedded default says plainly that it is not a voice model.
    assert page.is_visible("#banner")
    assert "random" in page.inner_text("#banner").lower()

    # 1. Push-to-talk through the fake microphone.
    talk = page.locator("#talk")
    talk.hover()
    page.mouse.down()
    page.wait_for_timeout(1500)
    page.mouse.up()
    page.wait_for_function("window.demo.response && window.demo.response.done", timeout=60_000)
    page.wait_for_function("window.demo.stats.played > 0", timeout=30_000)
    assert page.locator("#transcript li.user").count() >= 1
    # the user's side comes from the input transcription events: the placeholder is replaced by the words
    page.wait_for_function(
        "document.querySelector('#transcript li.user') && "
        "!document.querySelector('#transcript li.user').classList.contains('pending')",
        timeout=30_000,
    )
    heard = page.locator("#transcript li.user").first.inner_text().strip()
    assert heard and not heard.startswith("[") and heard != "[no speech heard]", heard
    assert page.locator("#transcript li.assistant").first.inner_text().strip() != ""
    sent_types = page.evaluate("window.demo.events.filter(e => e.direction === '→').map(e => e.type)")
    assert "input_audio_buffer.commit" in sent_types
    assert page.evaluate("window.demo.capturedSamples") > 0

    # 2. A typed turn, interrupted by push-to-talk while the answer is still playing.
    page.fill("#text-input", "Tell me a very long story about the sea, please.")
    page.press("#text-input", "Enter")
    page.wait_for_function("window.demo.response && window.demo.response.receivedSamples > 0", timeout=60_000)
    page.wait_for_function("window.demo.stats.played > 0", timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_demo_mid_conversation.png"))
    cancelled_before = page.locator("#transcript li.assistant.cancelled").count()
    still_streaming = page.evaluate("!window.demo.response.done")
    talk.hover()
    page.mouse.down()
    page.wait_for_timeout(300)
    sent_types = page.evaluate("window.demo.events.filter(e => e.direction === '→').map(e => e.type)")
    assert "conversation.item.truncate" in sent_types
    if still_streaming:
        assert "response.cancel" in sent_types
    assert page.locator("#transcript li.assistant.cancelled").count() == cancelled_before + 1
    # Playback was flushed at once: nothing of the interrupted answer is left in the ring buffer.
    page.wait_for_function("window.demo.stats.buffered === 0", timeout=5_000)
    page.mouse.up()
    assert not [e for e in console_errors if "bad server event" in e]
    context.close()


def test_a_call_over_webrtc_in_a_real_browser(server_url: str, caller_browser: object) -> None:
    """The demo's default mode: a WebRTC call as OpenAI's quickstart places it (RTCPeerConnection, the
    microphone track, the oai-events data channel, POST /v1/realtime/calls, an <audio> element)."""
    context, page, console_errors = open_demo(caller_browser, server_url + "/")
    assert page.evaluate("window.demo.transport") == "webrtc"
    assert page.evaluate("window.demo.call.callId").startswith("rtc_")
    assert page.evaluate("window.demo.call.pc.connectionState") == "connected"
    # the fake microphone says "hello": the server VAD ends the turn, the answer plays on the server's track
    page.wait_for_function(
        "window.demo.events.some(e => e.direction === '←' && e.type === 'output_audio_buffer.started')",
        timeout=60_000,
    )
    page.wait_for_function("window.demo.stats.energy > 0", timeout=30_000)  # the browser decoded the answer
    received = page.evaluate("window.demo.events.filter(e => e.direction === '←').map(e => e.type)")
    for kind in (
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "response.created",
    ):
        assert kind in received, (kind, received)
    assert "response.output_audio.delta" not in received  # the audio came on the track
    page.wait_for_function(
        "document.querySelector('#transcript li.assistant') && "
        "document.querySelector('#transcript li.assistant').innerText.trim() !== ''",
        timeout=30_000,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_demo_webrtc_call.png"))
    assert not [e for e in console_errors if "bad server event" in e or "call failed" in e], console_errors
    page.evaluate("window.demo.call.close()")
    context.close()
