// streamvoice browser demo: the WebRTC call, written the way OpenAI's WebRTC quickstart writes it.
// RTCPeerConnection with the microphone track, the "oai-events" data channel for the Realtime events, the SDP
// offer POSTed to /v1/realtime/calls, and the answer's audio track played by an <audio> element: the browser
// does Opus, jitter buffering and echo cancellation; the page only moves JSON events.

// Place a call with `key` (an ephemeral key from the server; app.js mints it). `onEvent(event)` gets every server event, `onClose(reason)` the end of the call.
// Returns { pc, channel, audio, callId, send(event), mute(muted), stats(), close() }.
export async function startCall({ key, onEvent, onClose }) {
  const pc = new RTCPeerConnection();
  const audio = document.createElement("audio");
  audio.autoplay = true;
  pc.ontrack = (e) => { audio.srcObject = e.streams[0]; };

  let mic = null;
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    pc.addTrack(mic.getAudioTracks()[0]);
  } catch (err) {
    console.warn("no microphone: listening only", err);
    pc.addTransceiver("audio", { direction: "recvonly" });
  }

  const channel = pc.createDataChannel("oai-events");
  channel.onmessage = (msg) => {
    try {
      onEvent(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad server event", err);
    }
  };
  let closed = false;
  const end = (reason) => {
    if (closed) return;
    closed = true;
    onClose(reason);
  };
  channel.onclose = () => end("the call ended");
  pc.onconnectionstatechange = () => {
    if (["failed", "closed"].includes(pc.connectionState)) end(`connection ${pc.connectionState}`);
  };

  await pc.setLocalDescription(await pc.createOffer());
  const headers = { "Content-Type": "application/sdp" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await fetch("/v1/realtime/calls", { method: "POST", body: pc.localDescription.sdp, headers });
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    try { message = (await res.json()).error.message; } catch (err) { /* not JSON */ }
    pc.close();
    if (mic) mic.getTracks().forEach((t) => t.stop());
    throw new Error(message);
  }
  const callId = (res.headers.get("Location") || "").split("/").pop();
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });

  return {
    pc, channel, audio, callId, hasMic: Boolean(mic),
    send(event) {
      if (channel.readyState !== "open") return false;
      channel.send(JSON.stringify(event));
      return true;
    },
    mute(muted) {
      if (mic) mic.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    },
    // what the browser received and played: seconds of audio, concealed (missing) samples, audio energy
    async stats() {
      const out = { receivedS: 0, concealmentEvents: 0, energy: 0 };
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          out.receivedS = s.totalSamplesDuration || 0;
          out.concealmentEvents = s.concealmentEvents || 0;
          out.energy = s.totalAudioEnergy || 0;
        }
      });
      return out;
    },
    close() {
      end("hung up");
      channel.close();
      pc.close();
      if (mic) mic.getTracks().forEach((t) => t.stop());
    },
  };
}
