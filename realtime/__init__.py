"""streamvoice's server: OpenAI Realtime (WebSocket, WebRTC) in front of Step-Audio-2 (LLM) and Token2Wav (speech).

The map (docs/ARCHITECTURE.md §1; ARCHITECTURE.md §2 walks one spoken reply through it, file by file):

- ``settings``, ``config``, ``errors``, ``metrics``, ``audio``, ``codecs``: the foundation every layer may
  import (how a setting is declared, the settings themselves, the error taxonomy, Prometheus metrics, audio
  formats / codecs / resampling).
- ``backends/``: LLM token sources behind one `LLMBackend` contract: ``synthetic``, ``sglang/`` (HTTP and
  in-process engine, prompt building, tokenizer, stream decoding).
- ``speech/``: shared by all sessions: the `Runtime`, the reply pipeline (ids -> parser -> transcript + PCM),
  the speech engine seam (Token2Wav), the inference worker thread, voices, the detokenizer.
- ``wire/``: the client-facing protocol, stateless: handshake, client-event decoding and validation, beta <-> GA
  mapping, session settings, the records server events render, server-event building.
- ``session/``: one connection, event loop only, over any transport (the `Transport` seam): connection loops,
  outbox, dispatch, input audio + VAD, conversation and items, response planning, one response's lifecycle,
  tool calls, what a playing transport's peer heard.
- ``webrtc/``: WebRTC calls on aiortc: the call transport (data channel, Opus tracks paced in real time), the
  offer/answer, the calls' lifecycle.
- ``http/``: the Starlette app: the Realtime WebSocket endpoint (the WebSocket transport), the WebRTC call
  routes and sideband, and the HTTP routes.
- ``cli``, ``commands/``, ``bench/``: the `realtime` command (one registry), its sub-commands and benchmarks.

Imports point one way: ``http -> webrtc -> session -> {wire, speech}``, ``speech -> backends``, everything -> the
foundation -> ``streaming_parser`` / ``token2wav``. tests/test_layering.py checks it, and that no import cycle
exists. The SGLang plugin (``step_audio2_sglang``, a separate top-level package) imports nothing from here; the
server imports only its torch-free ``placeholders`` module.
"""
