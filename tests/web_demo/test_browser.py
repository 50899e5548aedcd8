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
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.support.browser import CHROMIUM, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STREAMVOICE_ARTIFACTS", REPO / "artifacts"))
SERVER_START_TIMEOUT_S = 180.0
MIC = REPO / "tests" / "data" / "mic_hello.wav"
SERVER_KEY = "sk-browser-demo-key"


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
def browser_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the module's servers (the tiny decoder is generated once)."""
    return tmp_path_factory.mktemp("browser-cache")


def _serve(work: Path, cache: Path, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    log_path = work / "server.log"
    env = dict(os.environ, STREAMVOICE_CACHE=str(cache), PYTHONUNBUFFERED="1", **env)
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
def server_url(tmp_path_factory: pytest.TempPathFactory, browser_cache: Path) -> Iterator[str]:
    yield from _serve(tmp_path_factory.mktemp("browser-server"), browser_cache, {})


@pytest.fixture(scope="module")
def keyed_server_url(tmp_path_factory: pytest.TempPathFactory, browser_cache: Path) -> Iterator[str]:
    """A server started with an API key (the variable, as docs recommend)."""
    yield from _serve(
        tmp_path_factory.mktemp("keyed-server"), browser_cache, {"STREAMVOICE_API_KEY": SERVER_KEY}
    )


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
    assert page.evaluate("window.demo.secret.value").startswith("ek_")  # placed with an ephemeral key
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


def test_a_keyed_server_asks_for_its_key_once_and_the_page_keeps_only_an_ephemeral_key(
    keyed_server_url: str, browser: object
) -> None:
    context = browser.new_context(permissions=["microphone"])  # type: ignore[attr-defined]
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(keyed_server_url + "/?transport=websocket")
    # the demo's own door is closed on a keyed server (no --public-demo): the page asks for the key
    page.wait_for_selector("#key-form:not([hidden])", timeout=30_000)
    assert page.get_attribute("#status", "data-state") == "closed"
    page.fill("#key-input", "sk-wrong")
    page.press("#key-input", "Enter")
    page.wait_for_selector("#key-form:not([hidden])", timeout=10_000)  # asked again
    page.fill("#key-input", SERVER_KEY)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#status[data-state=open]", timeout=30_000)
    assert page.input_value("#key-input") == ""
    secret = page.evaluate("window.demo.secret.value")
    assert secret.startswith("ek_")
    assert page.locator("#voice option").count() >= 1  # /v1/voices read with the ephemeral key
    # the long-lived key is nowhere the page keeps things: not in a URL, not in storage
    assert not [url for url in requests if SERVER_KEY in url]
    assert SERVER_KEY not in page.evaluate(
        "JSON.stringify({...localStorage, ...sessionStorage}) + location.href"
    )
    page.fill("#text-input", "Hello there.")
    page.press("#text-input", "Enter")
    page.wait_for_function("window.demo.response && window.demo.response.done", timeout=60_000)
    context.close()


# A test-only AudioWorklet behind the playback node: it hears what the page really played and records each
# silence that more audio followed (the playback worklet outputs exact zeros when it has nothing; the tiny
# decoder's noise-like speech never holds zero for more than a sample or two).
MIN_GAP_SAMPLES = 32
TAP_WORKLET = f"""
class UnderrunTap extends AudioWorkletProcessor {{
  constructor() {{
    super();
    this.zeros = 0; this.heard = false; this.gaps = [];
    this.port.onmessage = () => {{
      this.port.postMessage(this.gaps);
      this.gaps = []; this.heard = false; this.zeros = 0;
    }};
  }}
  process(inputs) {{
    const x = inputs[0] && inputs[0][0];
    if (!x) return true;
    for (let i = 0; i < x.length; i++) {{
      if (x[i] === 0) {{ this.zeros++; continue; }}
      if (this.heard && this.zeros >= {MIN_GAP_SAMPLES}) this.gaps.push(this.zeros);
      this.zeros = 0; this.heard = true;
    }}
    return true;
  }}
}}
registerProcessor("underrun-tap", UnderrunTap);
"""
INSTALL_TAP = """async (code) => {
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  await window.demo.audio.audioWorklet.addModule(url);
  const tap = new AudioWorkletNode(window.demo.audio, "underrun-tap", { numberOfInputs: 1, numberOfOutputs: 0 });
  window.demo.playback.connect(tap);
  window.tapGaps = () => new Promise((resolve) => {
    tap.port.onmessage = (e) => resolve(e.data);
    tap.port.postMessage("report");
  });
}"""
# The page's playback worklet in a graph of its own, with a tap behind it: window.own.{node, stats, gaps()}.
OWN_PLAYBACK = """async (code) => {
  const ctx = new AudioContext({ sampleRate: 24000 });
  await ctx.audioWorklet.addModule("playback-worklet.js");
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
  const node = new AudioWorkletNode(ctx, "playback-processor", {
    numberOfInputs: 0, outputChannelCount: [1], processorOptions: { cushionSamples: 2400 },
  });
  const tap = new AudioWorkletNode(ctx, "underrun-tap", { numberOfInputs: 1, numberOfOutputs: 0 });
  node.connect(ctx.destination);
  node.connect(tap);
  window.own = { node, stats: {} };
  node.port.onmessage = (e) => { if (e.data.type === "stats") window.own.stats = e.data; };
  window.own.gaps = () => new Promise((resolve) => {
    tap.port.onmessage = (e) => resolve(e.data);
    tap.port.postMessage("report");
  });
  if (ctx.state === "suspended") await ctx.resume();
}"""
PLAYED_OUT = (
    "window.demo.response && window.demo.response.done && window.demo.stats.buffered === 0 && "
    "window.demo.stats.played === window.demo.response.receivedSamples"
)
# The page starts a response this long after its first audio (web_demo/app.js), like the bench's player.
PAGE_CUSHION_S = 0.1
# Main thread -> audio thread latency and the 128-sample render quantum, with room for a loaded CI machine.
TIMING_MARGIN_S = 0.04


def test_a_call_on_a_keyed_server_is_placed_with_an_ephemeral_key(
    keyed_server_url: str, caller_browser: object
) -> None:
    """The WebRTC mode on a server with --api-key: the page trades the typed key for an ephemeral key and
    places the call with it (POST /v1/realtime/calls never sees the server's key)."""
    context = caller_browser.new_context(permissions=["microphone"])  # type: ignore[attr-defined]
    page = context.new_page()
    call_headers: list[str] = []
    page.on(
        "request",
        lambda request: call_headers.append(request.headers.get("authorization", ""))
        if request.url.endswith("/v1/realtime/calls")
        else None,
    )
    page.goto(keyed_server_url + "/")
    page.wait_for_selector("#key-form:not([hidden])", timeout=30_000)
    page.fill("#key-input", SERVER_KEY)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#status[data-state=open]", timeout=30_000)
    assert page.evaluate("window.demo.transport") == "webrtc"
    assert page.evaluate("window.demo.call.callId").startswith("rtc_")
    assert call_headers and all(h.startswith("Bearer ek_") for h in call_headers), call_headers
    page.evaluate("window.demo.call.close()")
    context.close()


def test_underrun_counter_counts_what_the_audio_did(server_url: str, browser: object) -> None:
    """The page's underrun figure equals the silences its audio really had inside a response.

    An underrun is silence followed by more audio of the same response. The page used to count the
    buffer running dry as an underrun whenever the response had not ended yet, and its start rule (150 ms
    buffered) was met at once by the decoder's 240 ms first chunk, so it really went silent before the
    second chunk where a player waiting 100 ms after the first delta did not.
    """
    from realtime.bench.e2e import simulate_player

    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(server_url + "/?transport=websocket")
    page.wait_for_selector("#status[data-state=open]", timeout=30_000)

    # 1. Text turns: the page's counter against the audio it played, and against the bench's player.
    for turn in range(3):
        page.fill("#text-input", f"Say something short, please ({turn}).")
        page.press("#text-input", "Enter")
        if turn == 0:
            page.wait_for_function("window.demo.playback !== null", timeout=30_000)
            page.evaluate(INSTALL_TAP, TAP_WORKLET)
        page.wait_for_function(PLAYED_OUT, timeout=120_000)
        page.wait_for_timeout(100)  # the tap hears the last quantum
        gaps = page.evaluate("window.tapGaps()")
        figures = page.evaluate(
            "({underruns: window.demo.stats.underruns, stalledMs: window.demo.stats.stalledMs, "
            "arrivals: window.demo.response.arrivals, text: document.querySelector('#underruns').textContent})"
        )
        assert figures["underruns"] == len(gaps), (turn, figures["underruns"], gaps)
        if gaps:
            assert figures["stalledMs"] > 0
            assert figures["text"].startswith(f"{len(gaps)} (")
        else:
            assert figures["text"] == "0"
        # An independent player fed the same arrivals (realtime bench e2e's model): with a smaller cushion than
        # the page's it stalls at least as often, so a page underrun it does not have would be a false count.
        total, arrivals = 0, []
        for at_ms, samples in figures["arrivals"]:
            total += samples
            arrivals.append((at_ms / 1000, total / 24_000))
        worst, _ = simulate_player(arrivals, PAGE_CUSHION_S - TIMING_MARGIN_S)
        assert figures["underruns"] <= worst, (turn, figures, worst)

    # 2. The rule itself, on the page's playback worklet in an audio graph of its own (no server traffic can
    #    reach it): running dry at the end of speech is not an underrun; silence followed by more audio of the
    #    same response is one. Each step waits for the worklet's reported state.
    page.evaluate(OWN_PLAYBACK, TAP_WORKLET)

    def playback(state: str) -> None:
        try:
            page.wait_for_function(f"window.own.stats.state === '{state}'", timeout=10_000)
        except Exception as exc:  # playwright's TimeoutError: say where the worklet was instead
            stats = page.evaluate("JSON.stringify(window.own.stats)")
            raise AssertionError(f"playback never {state!r}: {stats}") from exc

    def post(message: str) -> None:
        page.evaluate(f"window.own.node.port.postMessage({message})")

    push = "{ type: 'push', samples: new Float32Array(1200).fill(0.25) }"  # 50 ms
    post(push)
    playback("starved")  # played it, ran dry: the response (still open) has nothing more yet
    post("{ type: 'end' }")  # ... and nothing more came: that was the end of speech
    playback("idle")
    assert page.evaluate("window.own.stats.underruns") == 0
    page.evaluate("window.own.gaps()")  # (the tap knows no responses: start it afresh for the next one)
    post(push)
    playback("starved")
    page.wait_for_timeout(300)  # silence
    post(push)  # more audio of the same response
    page.wait_for_function("window.own.stats.underruns === 1", timeout=5_000)
    post("{ type: 'end' }")
    playback("idle")
    page.wait_for_timeout(100)  # the tap hears the last quantum
    gaps = page.evaluate("window.own.gaps()")
    assert len(gaps) == 1 and gaps[0] > 24_000 * 0.2, gaps  # >= 300 ms of silence between the two pushes
    assert page.evaluate("window.own.stats.underruns") == 1
    assert page.evaluate("window.own.stats.stalledMs") >= 250
    context.close()
