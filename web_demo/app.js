// streamvoice browser demo over the OpenAI Realtime GA protocol, two ways (?transport=webrtc|websocket):
// - WebRTC (the default where the browser has RTCPeerConnection): a call as OpenAI's quickstart places it
//   (webrtc.js): the microphone streams, the server's VAD finds the turns, its audio plays in an <audio>
//   element; events go over the "oai-events" data channel.
// - WebSocket: push-to-talk; capture and playback run in AudioWorklets on one 24 kHz AudioContext; the page
//   moves PCM16 between the worklets and the socket.
// Both render the conversation and live figures. The page never holds the server's long-lived key: both
// connect with an ephemeral key (ek_...) from the server (docs/PROTOCOL.md §1.8), asking the user for the
// server's key only when the server requires it.
import { startCall } from "./webrtc.js";

const SAMPLE_RATE = 24000;
const CAPTURE_FRAME_SAMPLES = 960; // 40 ms per input_audio_buffer.append
const MIN_COMMIT_MS = 100; // the server rejects shorter commits (input_audio_buffer_commit_empty)

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), banner: $("banner"), voice: $("voice"), talk: $("talk"), reconnect: $("reconnect"),
  hint: $("hint"), transport: $("transport"),
  form: $("text-form"), input: $("text-input"), send: $("send"), transcript: $("transcript"), log: $("log"),
  keyForm: $("key-form"), keyInput: $("key-input"),
  ttfa: $("ttfa"), received: $("received"), played: $("played"), underruns: $("underruns"),
  responseStatus: $("response-status"),
};

// Everything the tests (and curious people) may read lives on window.demo.
const pageParams = new URLSearchParams(location.search);
const demo = {
  transport: pageParams.get("transport") || (window.RTCPeerConnection ? "webrtc" : "websocket"),
  call: null, muted: false, statsBase: null, turnEndedAt: 0,
  ws: null, audio: null, playback: null, capture: null, micStream: null,
  talking: false, capturedSamples: 0,
  // { id, itemId, createdAt, receivedSamples, bubble, done, arrivals: [[performance.now(), samples], ...] }
  response: null,
  lastResponseCreateAt: 0,
  // playback: the worklet's state (idle | waiting | playing | starved), see playback-worklet.js
  stats: { played: 0, buffered: 0, underruns: 0, stalledMs: 0, playback: "idle", ttfaMs: null, receivedSamples: 0 },
  sessionCreated: false, events: [], embeddedDemo: null,
  secret: null, // { value, expiresAt (ms) }: the ephemeral key sessions open with
  pendingVoice: [], // user bubbles of sent voice messages, waiting for their committed item id
  voiceBubbles: new Map(), // item id -> user bubble that its transcription fills in
};
window.demo = demo;

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.className = `status status-${state}`;
  ui.status.textContent = text;
}

function log(direction, event) {
  const text = `${direction} ${event.type}${event.error ? `: ${event.error.message}` : ""}`;
  demo.events.push({ direction, type: event.type });
  if (demo.events.length > 500) demo.events.shift();
  const li = document.createElement("li");
  li.textContent = text;
  ui.log.appendChild(li);
  while (ui.log.childElementCount > 200) ui.log.firstElementChild.remove();
}

function send(event) {
  if (demo.transport === "webrtc") {
    if (!demo.call || !demo.call.send(event)) return false;
  } else {
    if (!demo.ws || demo.ws.readyState !== WebSocket.OPEN) return false;
    demo.ws.send(JSON.stringify(event));
  }
  if (event.type !== "input_audio_buffer.append") log("→", event);
  return true;
}

function addBubble(role, text, extraClass) {
  const li = document.createElement("li");
  li.className = extraClass ? `${role} ${extraClass}` : role;
  li.textContent = text;
  ui.transcript.appendChild(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

// ---- PCM helpers -------------------------------------------------------------------------------
function floatToPcm16Base64(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function pcm16Base64ToFloat(b64) {
  const binary = atob(b64);
  const count = binary.length >> 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let v = binary.charCodeAt(2 * i) | (binary.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 0x8000;
  }
  return out;
}

// ---- audio graph -------------------------------------------------------------------------------
async function ensureAudio() {
  if (demo.audio) {
    if (demo.audio.state === "suspended") await demo.audio.resume();
    return;
  }
  const ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
  await ctx.audioWorklet.addModule("playback-worklet.js");
  await ctx.audioWorklet.addModule("capture-worklet.js");
  const playback = new AudioWorkletNode(ctx, "playback-processor", {
    numberOfInputs: 0, outputChannelCount: [1],
    // Starts a response 100 ms after its first audio, like the server's player model (bench e2e --cushion-ms).
    processorOptions: { cushionSamples: Math.round(0.1 * SAMPLE_RATE) },
  });
  playback.port.onmessage = (e) => {
    if (e.data.type === "stats") {
      const { played, buffered, underruns, stalledMs, state } = e.data;
      Object.assign(demo.stats, { played, buffered, underruns, stalledMs, playback: state });
      renderFigures();
    }
  };
  playback.connect(ctx.destination);
  demo.audio = ctx;
  demo.playback = playback;
  if (ctx.state === "suspended") await ctx.resume();
}

async function ensureMicrophone() {
  if (demo.capture) return;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const source = demo.audio.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(demo.audio, "capture-processor", {
    numberOfOutputs: 0, processorOptions: { frameSamples: CAPTURE_FRAME_SAMPLES },
  });
  capture.port.onmessage = (e) => {
    if (!demo.talking) return;
    demo.capturedSamples += e.data.length;
    send({ type: "input_audio_buffer.append", audio: floatToPcm16Base64(e.data) });
  };
  source.connect(capture);
  demo.micStream = stream;
  demo.capture = capture;
}

// ---- interruption ------------------------------------------------------------------------------
function assistantAudible() {
  return (demo.response && !demo.response.done) || demo.stats.buffered > 0;
}

function interrupt() {
  const r = demo.response;
  if (!r) return;
  if (demo.transport === "webrtc") { // the server knows what was played: it truncates and clears
    if (!r.done) send({ type: "response.cancel" });
    send({ type: "output_audio_buffer.clear" });
    if (r.bubble) r.bubble.classList.add("cancelled");
    r.interrupted = true;
    return;
  }
  const playedMs = Math.floor((demo.stats.played / SAMPLE_RATE) * 1000);
  demo.playback && demo.playback.port.postMessage({ type: "flush" });
  if (!r.done) send({ type: "response.cancel" });
  if (r.itemId && r.receivedSamples > 0) {
    const sentMs = Math.floor((r.receivedSamples / SAMPLE_RATE) * 1000);
    send({ type: "conversation.item.truncate", item_id: r.itemId, content_index: 0,
           audio_end_ms: Math.min(playedMs, sentMs) });
  }
  if (r.bubble) r.bubble.classList.add("cancelled");
  r.interrupted = true;
}

// ---- push to talk ------------------------------------------------------------------------------
function toggleMute() { // WebRTC: the microphone streams; the server VAD finds the turns
  if (!demo.call) return;
  demo.muted = !demo.muted;
  demo.call.mute(demo.muted);
  ui.talk.setAttribute("aria-pressed", String(!demo.muted));
  ui.talk.firstChild.textContent = demo.muted ? "Microphone muted: click to talk " : "Listening: just talk (click to mute) ";
}

async function startTalking() {
  if (demo.transport === "webrtc") return;
  if (demo.talking || !demo.sessionCreated) return;
  await ensureAudio();
  try {
    await ensureMicrophone();
  } catch (err) {
    addBubble("error", `microphone unavailable: ${err.message}`);
    return;
  }
  if (assistantAudible()) interrupt();
  demo.talking = true;
  demo.capturedSamples = 0;
  send({ type: "input_audio_buffer.clear" });
  ui.talk.setAttribute("aria-pressed", "true");
  ui.talk.firstChild.textContent = "Listening… release to send ";
}

function stopTalking() {
  if (demo.transport === "webrtc" || !demo.talking) return;
  demo.talking = false;
  ui.talk.setAttribute("aria-pressed", "false");
  ui.talk.firstChild.textContent = "Hold to talk ";
  const ms = (demo.capturedSamples / SAMPLE_RATE) * 1000;
  if (ms < MIN_COMMIT_MS) {
    send({ type: "input_audio_buffer.clear" });
    addBubble("error", "too short: hold the button while you speak");
    return;
  }
  send({ type: "input_audio_buffer.commit" });
  // the user's words arrive as conversation.item.input_audio_transcription.* events for the committed item
  const bubble = addBubble("user", `[voice message, ${(ms / 1000).toFixed(1)} s: transcribing…]`, "pending");
  demo.pendingVoice.push(bubble);
  requestResponse();
}

function requestResponse() {
  demo.lastResponseCreateAt = performance.now();
  send({ type: "response.create" });
}

async function sendText(text) {
  if (demo.transport !== "webrtc") await ensureAudio();
  if (assistantAudible()) interrupt();
  send({ type: "conversation.item.create",
         item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  addBubble("user", text);
  requestResponse();
}

// ---- server events -----------------------------------------------------------------------------
function renderFigures() {
  const r = demo.response;
  ui.ttfa.textContent = demo.stats.ttfaMs == null ? "–" : `${Math.round(demo.stats.ttfaMs)} ms`;
  ui.received.textContent = `${((r ? r.receivedSamples : 0) / SAMPLE_RATE).toFixed(2)} s`;
  ui.played.textContent = `${(demo.stats.played / SAMPLE_RATE).toFixed(2)} s`;
  const { underruns, stalledMs } = demo.stats;
  ui.underruns.textContent = underruns ? `${underruns} (${Math.round(stalledMs)} ms silent)` : "0";
}

function onServerEvent(event) {
  if (event.type !== "response.output_audio.delta") log("←", event);
  switch (event.type) {
    case "session.created":
      demo.sessionCreated = true;
      configureSession();
      setStatus("open", demo.transport === "webrtc" ? "connected (WebRTC)" : "connected (WebSocket)");
      for (const el of [ui.talk, ui.input, ui.send]) el.disabled = false;
      break;
    case "response.created": {
      demo.playback && demo.playback.port.postMessage({ type: "reset-stats" });
      demo.stats.played = 0;
      demo.stats.underruns = 0;
      demo.stats.stalledMs = 0;
      demo.stats.ttfaMs = null;
      demo.response = { id: event.response.id, itemId: null, receivedSamples: 0, bubble: null, done: false,
                        createdAt: demo.turnEndedAt || demo.lastResponseCreateAt || performance.now(), arrivals: [] };
      demo.turnEndedAt = 0;
      demo.statsBase = null; // WebRTC figures count from here
      ui.responseStatus.textContent = "in progress";
      ui.voice.disabled = true; // the server refuses voice changes once audio has been produced
      break;
    }
    case "response.output_item.added":
      if (demo.response && event.item && event.item.role === "assistant") demo.response.itemId = event.item.id;
      break;
    case "response.output_audio.delta": {
      const r = demo.response;
      if (!r || r.interrupted) break; // stale audio from a response we cut off
      const samples = pcm16Base64ToFloat(event.delta);
      if (r.receivedSamples === 0) demo.stats.ttfaMs = performance.now() - r.createdAt;
      r.itemId = r.itemId || event.item_id;
      r.receivedSamples += samples.length;
      r.arrivals.push([performance.now(), samples.length]);
      demo.stats.receivedSamples = r.receivedSamples;
      demo.playback.port.postMessage({ type: "push", samples }, [samples.buffer]);
      renderFigures();
      break;
    }
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const r = demo.response;
      if (!r || r.interrupted) break;
      if (!r.bubble) r.bubble = addBubble("assistant", "");
      r.bubble.textContent += event.delta;
      break;
    }
    case "conversation.item.input_audio_transcription.delta": {
      const bubble = demo.voiceBubbles.get(event.item_id);
      if (!bubble || !event.delta) break;
      if (bubble.classList.contains("pending")) {
        bubble.classList.remove("pending");
        bubble.textContent = "";
      }
      bubble.textContent += event.delta;
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const bubble = demo.voiceBubbles.get(event.item_id) || addBubble("user", "");
      bubble.classList.remove("pending");
      bubble.textContent = event.transcript || "[no speech heard]";
      demo.voiceBubbles.delete(event.item_id);
      break;
    }
    case "conversation.item.input_audio_transcription.failed": {
      const bubble = demo.voiceBubbles.get(event.item_id);
      if (bubble) {
        bubble.classList.remove("pending");
        bubble.textContent = `[voice message: not transcribed (${event.error.message || event.error.code})]`;
      }
      demo.voiceBubbles.delete(event.item_id);
      break;
    }
    case "input_audio_buffer.speech_started":
      demo.playback && demo.playback.port.postMessage({ type: "flush" });
      if (demo.transport === "webrtc" && demo.response && !demo.response.done && demo.response.bubble) {
        demo.response.bubble.classList.add("cancelled"); // barge-in: the server cancels and truncates
      }
      break;
    case "input_audio_buffer.speech_stopped":
      demo.turnEndedAt = performance.now(); // a spoken turn ended: its answer's first audio counts from here
      break;
    case "input_audio_buffer.committed":
      if (demo.transport === "webrtc" && !demo.pendingVoice.length) {
        demo.pendingVoice.push(addBubble("user", "[voice message: transcribing…]", "pending"));
      }
      {
        const bubble = demo.pendingVoice.shift();
        if (bubble) demo.voiceBubbles.set(event.item_id, bubble);
      }
      break;
    case "output_audio_buffer.started": // WebRTC: the server began playing this response on the track
      if (demo.response && demo.stats.ttfaMs == null) demo.stats.ttfaMs = performance.now() - demo.response.createdAt;
      demo.audioPlaying = true;
      renderFigures();
      break;
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      demo.audioPlaying = false;
      break;
    case "response.done": {
      const r = demo.response;
      const status = event.response ? event.response.status : "done";
      if (r) r.done = true;
      demo.playback && demo.playback.port.postMessage({ type: "end" });
      const reason = event.response && event.response.status_details && event.response.status_details.reason;
      ui.responseStatus.textContent = reason ? `${status} (${reason})` : status;
      if (status === "failed") {
        const err = event.response.status_details && event.response.status_details.error;
        addBubble("error", `response failed: ${err ? err.message : "unknown error"}`);
      }
      break;
    }
    case "error":
      // Recoverable by design: the socket stays open. Races after an interrupt are expected and quiet.
      if (!["response_cancel_not_active"].includes(event.error.code)) {
        addBubble("error", `${event.error.code || event.error.type}: ${event.error.message}`);
      }
      break;
    default:
      break;
  }
}

function configureSession() {
  const webrtc = demo.transport === "webrtc";
  const session = {
    type: "realtime",
    output_modalities: ["audio"],
    audio: {
      input: {
        format: { type: "audio/pcm", rate: SAMPLE_RATE },
        // WebRTC: hands-free, the server VAD finds the turns and barge-in; WebSocket: push-to-talk
        turn_detection: webrtc ? { type: "server_vad", silence_duration_ms: 600 } : null,
        transcription: { model: "step-audio-2-mini" }, // the server's own model transcribes
      },
      output: { format: { type: "audio/pcm", rate: SAMPLE_RATE } },
    },
  };
  if (ui.voice.value) session.audio.output.voice = ui.voice.value;
  send({ type: "session.update", session });
}

// ---- keys and connection -----------------------------------------------------------------------
const KEY_MARGIN_MS = 5000; // a key this close to its expiry is not used to open a session
const TYPED_KEY_SECONDS = 3600; // a key minted with the user's typed server key serves reconnects for an hour

async function mint(url, headers, body) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  if (res.status === 401) return null;
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const data = await res.json();
  return { value: data.value, expiresAt: data.expires_at * 1000 };
}

function askForServerKey() {
  // resolves with what the user typed; the field is cleared at once and the value is never stored
  return new Promise((resolve) => {
    setStatus("closed", "this server needs its API key");
    ui.keyForm.hidden = false;
    ui.keyInput.focus();
    ui.keyForm.onsubmit = (e) => {
      e.preventDefault();
      const key = ui.keyInput.value.trim();
      ui.keyInput.value = "";
      if (!key) return;
      ui.keyForm.hidden = true;
      resolve(key);
    };
  });
}

async function clientSecret() {
  if (demo.secret && demo.secret.expiresAt - Date.now() > KEY_MARGIN_MS) return demo.secret.value;
  // the demo's own door: open on a server without a key, or one started with --public-demo
  demo.secret = await mint("/demo/client_secrets", {}, {});
  while (!demo.secret) {
    const key = await askForServerKey();
    const body = { expires_after: { anchor: "created_at", seconds: TYPED_KEY_SECONDS } };
    demo.secret = await mint("/v1/realtime/client_secrets", { Authorization: `Bearer ${key}` }, body);
  }
  return demo.secret.value;
}

function disconnected(text) {
  setStatus("closed", `disconnected (${text})`);
  for (const el of [ui.talk, ui.input, ui.send]) el.disabled = true;
  ui.reconnect.hidden = false;
}

async function pollCallStats() { // WebRTC figures from the browser's own receiver statistics
  while (demo.call) {
    const now = await demo.call.stats();
    if (!demo.statsBase) demo.statsBase = now;
    const playedS = now.receivedS - demo.statsBase.receivedS;
    Object.assign(demo.stats, {
      played: Math.round(playedS * SAMPLE_RATE), receivedSamples: Math.round(playedS * SAMPLE_RATE),
      underruns: now.concealmentEvents - demo.statsBase.concealmentEvents, energy: now.energy,
      buffered: demo.audioPlaying ? 1 : 0,
    });
    if (demo.response) demo.response.receivedSamples = demo.stats.receivedSamples;
    renderFigures();
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function connectCall() {
  setStatus("connecting", "connecting (WebRTC)…");
  demo.sessionCreated = false;
  try {
    const key = await clientSecret();
    demo.call = await startCall({
      key,
      onEvent: onServerEvent,
      onClose: (reason) => { demo.call = null; disconnected(reason); },
    });
  } catch (err) {
    addBubble("error", `call failed: ${err.message}`);
    disconnected("call failed");
    return;
  }
  demo.call.audio.id = "remote-audio";
  document.body.appendChild(demo.call.audio);
  demo.muted = false;
  ui.talk.setAttribute("aria-pressed", "true");
  ui.talk.firstChild.textContent = demo.call.hasMic ? "Listening: just talk (click to mute) " : "No microphone ";
  pollCallStats();
}

async function connect() {
  if (demo.transport === "webrtc") return connectCall();
  const params = pageParams;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const model = params.get("model") || "step-audio-2-mini";
  setStatus("connecting", "connecting…");
  let key;
  try {
    key = await clientSecret();
  } catch (err) {
    console.warn("no ephemeral key", err);
    setStatus("error", "could not get a key from the server");
    ui.reconnect.hidden = false;
    return;
  }
  // browsers cannot set headers on a WebSocket: the key travels as a subprotocol, as OpenAI's SDKs send it
  const protocols = ["realtime", `openai-insecure-api-key.${key}`];
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=${encodeURIComponent(model)}`, protocols);
  demo.ws = ws;
  demo.sessionCreated = false;
  ws.onmessage = (msg) => {
    try {
      onServerEvent(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad server event", err);
    }
  };
  ws.onclose = (e) => disconnected(`${e.code}${e.reason ? `: ${e.reason}` : ""}`);
  ws.onerror = () => setStatus("error", "connection error");
}

async function loadServerInfo() {
  try {
    // a realtime route: the ephemeral key opens it
    const res = await fetch("/v1/voices", { headers: { Authorization: `Bearer ${await clientSecret()}` } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const info = await res.json();
    const list = Array.isArray(info) ? info : info.voices || [];
    const names = list.map((v) => (typeof v === "string" ? v : v.name || v.id));
    const current = info.default || names[0];
    ui.voice.replaceChildren(...names.map((n) => new Option(n, n, n === current, n === current)));
    ui.voice.disabled = names.length < 2;
    demo.embeddedDemo = Boolean(info.embedded_demo ?? info.is_embedded_demo);
  } catch (err) {
    console.warn("voice list unavailable", err);
  }
  try {
    const health = await (await fetch("/health")).json();
    if (demo.embeddedDemo === null || demo.embeddedDemo === false) {
      demo.embeddedDemo = Boolean(health.embedded_demo ?? health.is_embedded_demo);
    }
    if (demo.embeddedDemo) {
      ui.banner.hidden = false;
      ui.banner.textContent = health.notice || "Embedded pipeline demo: a synthetic token source and a " +
        "random-weight decoder. What you hear is noise-like audio, not a voice model. Start the server " +
        "with --backend sglang and a real Step-Audio-2 token2wav directory to talk to the model.";
    }
  } catch (err) {
    console.warn("health unavailable", err);
  }
}

// ---- wiring ------------------------------------------------------------------------------------
ui.talk.addEventListener("click", () => { if (demo.transport === "webrtc") toggleMute(); });
ui.talk.addEventListener("pointerdown", (e) => { e.preventDefault(); startTalking(); });
ui.talk.addEventListener("pointerup", stopTalking);
ui.talk.addEventListener("pointerleave", stopTalking);
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && document.activeElement !== ui.input) { e.preventDefault(); startTalking(); }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && document.activeElement !== ui.input) { e.preventDefault(); stopTalking(); }
});
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  ui.input.value = "";
  sendText(text);
});
ui.voice.addEventListener("change", () => configureSession());
ui.reconnect.addEventListener("click", () => { ui.reconnect.hidden = true; connect(); });

function showTransport() {
  const webrtc = demo.transport === "webrtc";
  const other = webrtc ? "websocket" : "webrtc";
  ui.transport.innerHTML = `${webrtc ? "WebRTC" : "WebSocket"} · <a href="?transport=${other}">use ${
    webrtc ? "WebSocket" : "WebRTC"}</a>`;
  if (webrtc && ui.talk.querySelector("kbd")) ui.talk.querySelector("kbd").remove(); // no push-to-talk key
  ui.hint.textContent = webrtc
    ? "Just talk: the server hears when you stop and answers; speaking over it interrupts it. Click the button to mute."
    : "Hold the button (or the space bar) while you speak; release to send. Pressing it while the assistant speaks interrupts it.";
}

showTransport();
loadServerInfo().finally(connect);
