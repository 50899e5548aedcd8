// Gapless playback: a fixed-size ring buffer filled by the page, drained on the audio clock.
//
// A response's audio starts playing a fixed cushion of time after its first samples arrive (or at once when
// the response has already ended), the rule of the server's own player model (`realtime bench e2e
// --cushion-ms`). The cushion is time, not buffered samples: the decoder's first chunk arrives as one burst
// of 240 ms, so a rule of "150 ms buffered" started at once and ran dry before the second chunk, while a
// player that waits 100 ms after the first delta plays on.
//
// An underrun is silence followed by more audio of the same response: running dry is only counted when more
// audio arrives before the response ends; running dry at the end of speech (before the response's `end`
// message arrives) is not. Reports played samples, underruns and the time they stalled to the page.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.capacity = opts.capacitySamples || 24000 * 120; // 2 minutes at 24 kHz: bounded memory
    this.cushion = opts.cushionSamples || 2400; // 100 ms of audio-clock time
    this.ring = new Float32Array(this.capacity);
    this.readPos = 0;
    this.writePos = 0;
    this.buffered = 0;
    // idle: nothing to play | waiting: first samples in, cushion running | playing | starved: ran dry while
    // the response was still streaming (an underrun if and when more of its audio arrives)
    this.state = "idle";
    this.startAt = 0; // audio frame at which a waiting response starts
    this.starvedAt = 0; // audio frame at which playback ran dry
    this.ended = true; // no response streaming yet
    this.played = 0;
    this.underruns = 0;
    this.stalledFrames = 0;
    this.dropped = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "push") {
      this.ended = false;
      this.write(msg.samples);
      if (this.state === "idle") {
        this.state = "waiting";
        this.startAt = currentFrame + this.cushion;
      } else if (this.state === "starved") {
        this.underruns++; // the silence was followed by more audio of the same response
        this.stalledFrames += Math.max(0, currentFrame - this.starvedAt);
        this.state = "playing";
        this.report();
      }
    } else if (msg.type === "end") {
      this.ended = true; // play out what is left; running dry now is the end of speech
      if (this.state === "starved") {
        this.state = "idle";
        this.report();
      }
    } else if (msg.type === "flush") {
      this.readPos = this.writePos = this.buffered = 0;
      this.state = "idle";
      this.ended = true;
      this.report();
    } else if (msg.type === "reset-stats") {
      this.played = 0;
      this.underruns = 0;
      this.stalledFrames = 0;
      this.report();
    }
  }

  write(samples) {
    for (let i = 0; i < samples.length; i++) {
      if (this.buffered === this.capacity) {
        this.dropped++;
        continue;
      }
      this.ring[this.writePos] = samples[i];
      this.writePos = (this.writePos + 1) % this.capacity;
      this.buffered++;
    }
  }

  report() {
    this.port.postMessage({ type: "stats", played: this.played, buffered: this.buffered,
                            underruns: this.underruns, stalledMs: (this.stalledFrames / sampleRate) * 1000,
                            dropped: this.dropped, state: this.state });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (this.state === "waiting" && (currentFrame >= this.startAt || this.ended)) this.state = "playing";
    let i = 0;
    if (this.state === "playing") {
      for (; i < out.length && this.buffered > 0; i++) {
        out[i] = this.ring[this.readPos];
        this.readPos = (this.readPos + 1) % this.capacity;
        this.buffered--;
      }
      this.played += i;
      if (this.buffered === 0) {
        if (this.ended) {
          this.state = "idle";
        } else {
          this.state = "starved";
          this.starvedAt = currentFrame + i;
        }
        this.report();
      }
    }
    for (; i < out.length; i++) out[i] = 0;
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= 1200) { // every 50 ms
      this.sinceReport = 0;
      this.report();
    }
    return true;
  }
}

registerProcessor("playback-processor", PlaybackProcessor);
