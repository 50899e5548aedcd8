// Gapless playback: a fixed-size ring buffer filled by the page, drained on the audio clock.
// Playback starts once a small cushion is buffered (or the response has ended), so 20-100 ms deltas that
// arrive with network jitter play back to back. Reports played samples and underruns to the page.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.capacity = opts.capacitySamples || 24000 * 120; // 2 minutes at 24 kHz: bounded memory
    this.cushion = opts.cushionSamples || 3600; // 150 ms
    this.ring = new Float32Array(this.capacity);
    this.readPos = 0;
    this.writePos = 0;
    this.buffered = 0;
    this.playing = false;
    this.ended = true; // no response streaming yet
    this.played = 0;
    this.underruns = 0;
    this.dropped = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "push") {
      this.ended = false;
      this.write(msg.samples);
    } else if (msg.type === "end") {
      this.ended = true; // play out what is left; running dry now is not an underrun
    } else if (msg.type === "flush") {
      this.readPos = this.writePos = this.buffered = 0;
      this.playing = false;
      this.ended = true;
      this.report();
    } else if (msg.type === "reset-stats") {
      this.played = 0;
      this.underruns = 0;
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
                            underruns: this.underruns, dropped: this.dropped, playing: this.playing });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && (this.buffered >= this.cushion || (this.ended && this.buffered > 0))) {
      this.playing = true;
    }
    let i = 0;
    if (this.playing) {
      for (; i < out.length && this.buffered > 0; i++) {
        out[i] = this.ring[this.readPos];
        this.readPos = (this.readPos + 1) % this.capacity;
        this.buffered--;
      }
      this.played += i;
      if (this.buffered === 0) {
        this.playing = false;
        if (!this.ended) this.underruns++; // ran dry while the response was still streaming
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
