"""OpenAI's own browser WebRTC transport (``@openai/agents-realtime``) in Chromium, pointed at our server.

The package is installed from the npm registry at test time (never committed) and bundled with esbuild into a
page the server itself serves (same origin: no CORS involved). The page runs a `RealtimeSession` over
`OpenAIRealtimeWebRTC` with the server's ``/v1/realtime/calls`` as its ``baseUrl``, exactly as an app written
for OpenAI does, sends a text message and waits for the spoken answer. Skipped without npm or the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.config import ServerConfig
from realtime.http.app import create_app
from tests.support.server_harness import ServerHandle, start_server
from tests.support.browser import CHROMIUM, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NPM_TIMEOUT_S = 300
PACKAGE = "@openai/agents-realtime"
ENTRY = """
import { RealtimeAgent, RealtimeSession, OpenAIRealtimeWebRTC } from "@openai/agents-realtime";
window.AgentsRealtime = { RealtimeAgent, RealtimeSession, OpenAIRealtimeWebRTC };
"""
PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<script type="module">
import "./agents-realtime.js";
const { RealtimeAgent, RealtimeSession, OpenAIRealtimeWebRTC } = window.AgentsRealtime;
window.result = { events: [], errors: [] };
try {
  const agent = new RealtimeAgent({ name: "Assistant", instructions: "Be brief." });
  const transport = new OpenAIRealtimeWebRTC({ baseUrl: location.origin + "/v1/realtime/calls" });
  const session = new RealtimeSession(agent, { transport, model: "step-audio-2-mini" });
  window.session = session;
  session.on("transport_event", (e) => window.result.events.push(e.type));
  session.on("error", (e) => window.result.errors.push(JSON.stringify(e.error ?? e)));
  // the way OpenAI's guide does it: an ephemeral key minted for the page (by its backend; this server has no
  // key, so the page may mint it itself), the only kind the SDK takes in a browser without useInsecureApiKey
  const minted = await fetch("/v1/realtime/client_secrets", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({}),
  });
  const { value } = await minted.json();
  window.result.key = value;
  await session.connect({ apiKey: value });
  window.result.callId = transport.callId;
  window.result.connected = true;
  session.sendMessage("Hello!");
} catch (err) {
  window.result.errors.push(String(err));
}
</script></body></html>
"""


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the bundled SDK and the page; the installed version is in ``version.txt``."""
    npm = shutil.which("npm")
    if npm is None or not Path(CHROMIUM).exists():
        pytest.skip("npm or chromium is missing")
    build = tmp_path_factory.mktemp("agents-realtime")
    (build / "package.json").write_text('{"private": true}')
    install = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE, "esbuild"]
    done = subprocess.run(install, cwd=build, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    if done.returncode != 0:
        pytest.skip(f"npm install failed (no registry?): {done.stderr[-500:]}")
    page = build / "page"
    page.mkdir()
    (build / "entry.js").write_text(ENTRY)
    bundle = [
        str(build / "node_modules" / ".bin" / "esbuild"),
        "entry.js",
        "--bundle",
        "--format=esm",
        "--platform=browser",
        f"--outfile={page / 'agents-realtime.js'}",
    ]
    subprocess.run(bundle, cwd=build, check=True, capture_output=True, timeout=NPM_TIMEOUT_S)
    (page / "index.html").write_text(PAGE)
    meta = json.loads((build / "node_modules" / "@openai" / "agents-realtime" / "package.json").read_text())
    (page / "version.txt").write_text(meta["version"])
    return page


@pytest.fixture(scope="module")
def server(page_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    cache = Path(os.environ.get("STREAMVOICE_CACHE", tmp_path_factory.mktemp("cache")))
    config = ServerConfig(backend="synthetic", synthetic_tokens_per_second=2000.0, cache_dir=cache)
    handle = start_server(config, [lambda runtime: create_app(runtime, web_demo_dir=page_dir)])
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as started:
        yield started


def test_openai_agents_realtime_webrtc_transport_talks_to_the_server(
    server: ServerHandle, page_dir: Path, playwright: object, tmp_path: Path
) -> None:
    silence = tmp_path / "silence.wav"  # a quiet microphone: the answer is not interrupted
    sf.write(silence, np.zeros(2 * 16_000, dtype=np.int16), 16_000, subtype="PCM_16")
    with chromium(playwright, silence) as browser:
        context = browser.new_context(permissions=["microphone"])  # type: ignore[attr-defined]
        page = context.new_page()
        page.goto(server.http_url("/"))
        page.wait_for_function("window.result && (window.result.connected || window.result.errors.length)")
        result = page.evaluate("window.result")
        assert result.get("connected"), result  # the SDK got session.updated within its 5 s
        assert result["callId"].startswith("rtc_")
        assert result["key"].startswith("ek_")  # a key the server minted, as in a real browser app
        page.wait_for_function(
            "window.result.events.includes('output_audio_buffer.stopped') || window.result.errors.length",
            timeout=60_000,
        )
        result = page.evaluate("window.result")
        context.close()
    version = (page_dir / "version.txt").read_text()
    assert result["errors"] == [], (version, result["errors"])
    events = result["events"]
    for kind in ("session.created", "session.updated", "response.done", "output_audio_buffer.started"):
        assert kind in events, (version, kind, events)
    assert "response.output_audio.delta" not in events

