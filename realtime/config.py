"""Server configuration: every ``realtime serve`` setting, each declared once as a field of a frozen dataclass.

Each field made with `realtime.settings.setting` is at once the flag, the ``STREAMVOICE_*`` environment
variable, the ``--help`` line (with its default and variable), the bounds checked on every build, and a row of
the docs' tables; `realtime.settings` derives them all. To add a setting, add a field here (the docstring of
`realtime.settings` shows one). Precedence, lowest to highest: defaults < environment variables < flags
(`ServerConfig.from_env`, `realtime.commands.serve.config_from_args`).

The option groups `LLMOptions` and `WebRTCOptions` (and their value parsers) live in realtime/config_groups.py.

Size: over 400 lines because it is the one list of the server's own ~50 settings, each with its help text;
splitting it further would scatter what this module exists to keep together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from realtime.config_groups import LLMOptions, WebRTCOptions
from realtime.settings import ENV_PREFIX, Section, build, check, group, setting

BackendKind = Literal["synthetic", "sglang", "sglang-engine"]
DialectName = Literal["auto", "ga", "beta"]
DtypeName = Literal["float32", "float16", "bfloat16"]
LogLevel = Literal["debug", "info", "warning", "error"]

CACHE_ENV = ENV_PREFIX + "CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/streamvoice")
MIN_HOP_TOKENS = 5  # below this the first Token2Wav call emits no audio (960*H - 3840 <= 0)
MAX_AUTO_TORCH_THREADS = 4  # small per-chunk kernels stop scaling beyond a few threads
MAX_PORT = 65535
# docs/PROTOCOL.md §7.2: 20-100 ms of audio per output_audio.delta
MIN_AUDIO_DELTA_MS = 20
MAX_AUDIO_DELTA_MS = 100


def default_cache_dir() -> Path:
    """The folder for generated artefacts (the embedded tiny Token2Wav): ``$STREAMVOICE_CACHE`` or ~/.cache."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else DEFAULT_CACHE_DIR.expanduser()


def default_torch_threads() -> int:
    """Half the CPUs (the event loop, the LLM client and VAD need the rest), at least 1, at most 4."""
    return max(1, min(MAX_AUTO_TORCH_THREADS, (os.cpu_count() or 1) // 2))


def parse_voice_spec(spec: str) -> tuple[str, Path]:
    """Parse ``name=path.wav`` (one ``--voice``, one element of ``STREAMVOICE_VOICES``).

    Raises:
        ValueError: no ``=``, empty name or empty path.
    """
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"voice must be NAME=PATH.wav, got {spec!r}")
    return name, Path(path).expanduser()


def parse_origin(text: str) -> str:
    """One browser origin of ``--allowed-origins`` (``scheme://host[:port]`` or ``*``), trailing slash dropped."""
    return text.strip().rstrip("/")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server process needs at start-up. Immutable; build a new one with `dataclasses.replace`.

    Attributes: the settings below (each one's ``help`` says what it is; ``realtime serve --help`` lists them
    with their defaults and variables), ``llm``, the SGLang backends' options (`LLMOptions`), and ``webrtc``,
    the WebRTC calls' options (`WebRTCOptions`).
    """

    # network
    host: str = setting("127.0.0.1", Section.NETWORK, "interface to bind; 0.0.0.0 exposes it")
    port: int = setting(8000, Section.NETWORK, "TCP port; 0 picks a free one", ge=0, le=MAX_PORT)
    dialect: DialectName = setting(
        "auto",
        Section.NETWORK,
        "Realtime event family: auto = GA unless a client sends OpenAI-Beta: realtime=v1 or the "
        "openai-beta.realtime-v1 subprotocol; ga or beta force one for every connection (docs/PROTOCOL.md §2.1)",
    )

    # security and limits: README "Security and limits" is generated from these
    api_key: str | None = setting(
        None,
        Section.LIMITS,
        "require this key on every route but /health*, /favicon.ico and the demo page: HTTP clients send "
        "Authorization: Bearer KEY (the openai SDKs' api_key) or an api-key header, else 401 invalid_api_key; "
        "a WebSocket client may also use the openai-insecure-api-key.KEY subprotocol (never echoed) or "
        "?api_key=KEY, else it gets invalid_api_key and close 1008. Realtime sessions also take the ephemeral "
        "keys POST /v1/realtime/client_secrets mints (docs/PROTOCOL.md §1.8). Log lines never show a key (nor Bearer tokens or ek_ "
        "keys: redacted). Prefer the variable: flags show up in ps",
        shown_default="none: every client is accepted",
        metavar="KEY",
    )
    public_demo: bool = setting(
        False,
        Section.LIMITS,
        "with --api-key: the demo page gets its short-lived keys (60 s, Realtime only) from "
        "POST /demo/client_secrets without the server's key, so anyone who can load the page can hold "
        "sessions; without it the page asks its user for the key once and keeps only the short-lived one. "
        "A server without --api-key is public anyway",
        shown_default="off",
    )
    client_secret_max_seconds: int = setting(
        7200,
        Section.LIMITS,
        "longest lifetime an ephemeral key may ask for in expires_after.seconds (10 and above; longer "
        "requests get integer_above_max_value). A key opens sessions until it expires; a session started in "
        "time runs to --max-session-seconds",
        ge=10,
        le=86400,
    )
    max_client_secrets: int = setting(
        1024,
        Section.LIMITS,
        "ephemeral keys held at once (32 MiB of bound session configurations at most), and as many again "
        "for the demo page's own; expired keys are purged, and when live keys fill a store the oldest one "
        "stops working",
        ge=1,
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        Section.LIMITS,
        "browser origins (scheme://host[:port]) allowed to call this server, or '*' for any; a page from "
        "another origin gets origin_not_allowed (HTTP 403; on a WebSocket the error event, then close 1008). "
        "Allowed origins get CORS answers (preflights, Access-Control-Allow-Origin). Clients that send no "
        "Origin header (SDKs, servers) are not checked. Serving the demo under a DNS name without a key needs "
        "this (a DNS name could be rebound by a hostile site)",
        shown_default="loopback pages, and this server's own page under an IP address (under any name when a "
        "key is set)",
        item=parse_origin,
        metavar="ORIGIN[,ORIGIN...]",
    )
    max_sessions: int = setting(
        32,
        Section.LIMITS,
        "concurrent WebSocket sessions; one more gets session_limit_reached and close 1013 (SDKs retry "
        "later). WebRTC calls count against it from their answer to their end, and HTTP speech and chat "
        "answers while they are generated; a full server answers them 503 session_limit_reached",
        ge=1,
    )
    max_connections: int = setting(
        0,
        Section.LIMITS,
        "open TCP connections across every door (HTTP, WebSocket, health). At the cap, a new connection "
        "closes the one that has waited longest for its client (an idle connection, or a request head or body "
        "that does not arrive: 408 request_timeout); with none to close it gets 503 "
        "connection_limit_reached, except GET /health* which a small reserve keeps answering. The open-file "
        "limit is raised to its hard limit at start-up and the log says what it allows",
        shown_default="0 = what the open-file limit leaves after the files the server itself needs",
        ge=0,
    )
    max_connections_per_ip: int = setting(
        256,
        Section.LIMITS,
        "open connections from one client address; one more gets 429 rate_limit_exceeded (GET /health* "
        "still answered) and is closed. Behind a proxy every client has the proxy's address: raise it or "
        "use 0 (off) and limit clients at the proxy",
        ge=0,
    )
    header_timeout: float = setting(
        10.0,
        Section.LIMITS,
        "seconds a client has to send a request's line and headers, from the moment it connects (or its "
        "first byte after an earlier answer); then 408 request_timeout and the connection closes",
        gt=0,
    )
    body_timeout: float = setting(
        30.0,
        Section.LIMITS,
        "seconds the server may wait for a request body that does not arrive, plus one second per 16 KiB "
        "that does (a slow but steady upload goes on, a stalled or trickling one does not); then 408 "
        "request_timeout (or a closed connection once the answer began)",
        gt=0,
    )
    body_memory_mb: int = setting(
        256,
        Section.LIMITS,
        "memory for request bodies over 64 KiB being read and decoded at once (uploads, transcriptions, chat "
        "with audio): each reserves its declared length (a chunked one what has arrived) until its answer "
        "starts; one that finds no room within 10 s gets 503 upload_capacity_reached, one larger than the "
        "whole budget 413 request_too_large",
        ge=1,
    )
    max_transcriptions: int = setting(
        16,
        Section.LIMITS,
        "transcriptions running at once across the server (POST /v1/audio/transcriptions and Realtime input "
        "transcription); one that finds none free within --transcription-wait gets 503 "
        "transcription_capacity_reached (HTTP) or conversation.item.input_audio_transcription.failed with "
        "that code (Realtime)",
        ge=1,
    )
    transcription_wait_seconds: float = setting(
        10.0,
        Section.LIMITS,
        "seconds a transcription waits for a free slot",
        flag="--transcription-wait",
        gt=0,
    )
    max_session_seconds: float = setting(
        3600.0,
        Section.LIMITS,
        "how long a session may last; then it gets a session_expired error and close 1000 (OpenAI's GA "
        "limit is 60 minutes, docs/PROTOCOL.md §1.4)",
        gt=0,
    )
    send_timeout: float = setting(
        30.0,
        Section.LIMITS,
        "seconds one frame, or one producer waiting for room in the session's outbox, may wait for a client "
        "that does not read; then the session ends (responses abort, the slot is freed; close 1008 "
        "send_timeout if the socket still takes it). A streamed HTTP answer (speech, chat, transcription) "
        "whose next chunk waits that long ends the same way: its generation stops and its connection closes",
        gt=0,
    )
    ws_ping_interval: float = setting(
        20.0,
        Section.LIMITS,
        "seconds between WebSocket keepalive pings; 0 disables them. A peer that vanished without a FIN, or "
        "never reads, is dropped within interval + timeout (close 1011) and its session ends",
        ge=0,
    )
    ws_ping_timeout: float = setting(
        20.0, Section.LIMITS, "seconds a pong may take before the peer counts as dead", gt=0
    )
    max_out_of_band_responses: int = setting(
        2,
        Section.LIMITS,
        "concurrent conversation:'none' responses per session; one more gets too_many_out_of_band_responses "
        "(in-band responses stay one at a time: conversation_already_has_active_response)",
        flag="--max-out-of-band",
        ge=0,
    )
    max_decoder_streams: int = setting(
        0,
        Section.LIMITS,
        "live speech decoder streams (spoken responses) across the server; a spoken response that finds none "
        "free within --decoder-wait gets decoder_capacity_reached (type server_error) instead of "
        "response.created. One stream holds ~0.8-0.9 GB at full size, a few MB in the embedded demo; /health "
        "shows decoder_streams",
        shown_default="0 = --decoder-memory-mb / one stream's measured state, at most sessions x (1 + "
        "out-of-band)",
        ge=0,
    )
    decoder_memory_mb: int = setting(
        8192,
        Section.LIMITS,
        "memory budget for live decoder stream states when --max-decoder-streams is 0",
        ge=1,
    )
    decoder_wait_seconds: float = setting(
        2.0,
        Section.LIMITS,
        "seconds a spoken answer (Realtime, WebRTC, HTTP speech, chat audio) waits in line for the decoder "
        "(a memory slot and real-time room, see --decoder-headroom); then decoder_capacity_reached (Realtime: "
        "an error event instead of response.created; HTTP: 503)",
        flag="--decoder-wait",
        gt=0,
    )
    decoder_headroom: float = setting(
        0.2,
        Section.LIMITS,
        "share of the decoder's measured real-time capacity kept spare: a spoken answer starts only while the "
        "answers speaking plus it need at most (1 - headroom) x the audio seconds per second the decoder "
        "serves at that load (measured at start-up and on every batch; /metrics "
        "streamvoice_decoder_capacity_audio_seconds_per_second), so admitted answers never stutter",
        ge=0.0,
        le=0.9,
    )
    realtime_admission: bool = setting(
        True,
        Section.LIMITS,
        "admit spoken answers by the decoder's measured real-time capacity (--decoder-headroom); "
        "--no-realtime-admission leaves only the memory slots (answers past the capacity then start and "
        "stutter: for benchmarks)",
        flag="--no-realtime-admission",
        shown_default="on",
    )
    first_chunk_hold_load: float = setting(
        0.4,  # 0.5 left 3 of 80 answers at 8 sessions with a stall after the first chunk, 0.4 none (DEPLOY 3.2)
        Section.LIMITS,
        "when the decoder is this loaded (answers speaking / the audio seconds per second it serves at that "
        "load), or answers wait in line for it, a starting answer's first chunk (~0.24 s of audio) is held "
        "until its second is decoded and both go out together: its first audio comes a few hundred ms later, "
        "but its listener is not left with a quarter second of audio while the next chunk's codes are still on "
        "their way (0: never hold)",
        ge=0.0,
    )
    max_conversation_items: int = setting(
        1000,
        Section.LIMITS,
        "items one conversation may hold; an item, a commit or an in-band response.create past a "
        "conversation cap gets conversation_limit_reached (the audio stays buffered; delete items to go on)",
        ge=1,
    )
    max_conversation_mb: int = setting(
        64,
        Section.LIMITS,
        "MiB of text and audio one conversation may hold (audio stored once, as sent)",
        ge=1,
    )
    max_conversation_audio_seconds: float = setting(
        1800.0, Section.LIMITS, "seconds of audio one conversation may hold", gt=0
    )
    drain_seconds: float = setting(
        10.0,
        Section.LIMITS,
        "on SIGTERM: new sessions get server_shutting_down (close 1001), new responses and HTTP speech, chat "
        "and transcription requests server_shutting_down (503), /health says ready: draining; active "
        "responses and HTTP answers get this long to finish, then every session closes with 1001 and an HTTP "
        "answer still running ends so its client can tell: an SSE stream with an error event "
        "server_shutting_down, a chunked audio stream without its final chunk, one not begun with 503. A "
        "second SIGTERM or Ctrl-C stops at once",
        ge=0,
    )

    # LLM backend
    backend: BackendKind = setting(
        "synthetic",
        Section.LLM,
        "token source: synthetic (no model, the embedded demo), sglang (a running SGLang HTTP server) or "
        "sglang-engine (SGLang in this process)",
    )
    model_path: str | None = setting(
        None,
        Section.LLM,
        "Step-Audio-2-mini model folder or hub id: the model SGLang must serve (checked at start-up with "
        "/model_info), and the weights for --backend sglang-engine",
        metavar="PATH",
    )
    synthetic_tokens_per_second: float = setting(
        80.0,  # like a 7B model served by SGLang on one GPU (60-100 tokens/s); real time needs >= ~32
        Section.LLM,
        "tokens per second the synthetic backend emits (a GPU-served 7B model does ~60-100)",
        flag="--synthetic-rate",
        gt=0,
    )
    synthetic_seed: int = setting(0, Section.LLM, "seed of the synthetic backend's deterministic replies")
    context_length: int = setting(
        0,
        Section.LLM,
        "LLM context length in tokens (prompt + answer); a value below the model's caps every request",
        shown_default="0 = what the backend reports (synthetic: 16384)",
        ge=0,
    )
    min_answer_tokens: int = setting(
        64,  # ~1.5 s of speech: below this a spoken answer is cut short, so older turns are dropped instead
        Section.LLM,
        "smallest answer budget a response starts with: with less context left, the session's truncation "
        "setting drops the oldest turns, or the response fails with context_length_exceeded",
        ge=1,
    )
    llm: LLMOptions = group(LLMOptions)
    webrtc: WebRTCOptions = group(WebRTCOptions)

    # speech decoder
    token2wav_dir: Path | None = setting(
        None,
        Section.SPEECH,
        "folder with the Token2Wav weights (flow.yaml, flow.pt, hift.pt, campplus.onnx, "
        "speech_tokenizer_v2_25hz.onnx)",
        shown_default="the embedded tiny random-weight model, generated into --cache-dir",
    )
    cache_dir: Path = setting(
        None,
        Section.SPEECH,
        "where the embedded tiny Token2Wav is generated on first start, and uploaded voices are kept",
        default_factory=default_cache_dir,
        shown_default=f"${CACHE_ENV} or {DEFAULT_CACHE_DIR}",
    )
    device: str = setting("cpu", Section.SPEECH, "torch device of Token2Wav: cpu, cuda, cuda:1")
    dtype: DtypeName = setting("float32", Section.SPEECH, "torch dtype of Token2Wav")
    first_hop_tokens: int = setting(
        10,  # docs/TOKEN2WAV.md §4.1: a short first hop for latency
        Section.SPEECH,
        "audio tokens in the first Token2Wav chunk (smaller = earlier first audio)",
        flag="--first-chunk",
        ge=MIN_HOP_TOKENS,
    )
    hop_tokens: int = setting(
        25,
        Section.SPEECH,
        "audio tokens per later Token2Wav chunk (the reference uses 25)",
        flag="--hop",
        ge=MIN_HOP_TOKENS,
    )
    hop_growth: float = setting(
        1.5,
        Section.SPEECH,
        "each hop may be at most this factor larger than the previous one until --hop (10 -> 15 -> 23 -> 25 "
        "by default), so the second chunk is ready before the first has played; a large value jumps "
        "straight to --hop",
        ge=1,
    )
    torch_threads: int = setting(
        0,
        Section.SPEECH,
        "torch intra-op threads for Token2Wav on CPU (more than the free cores makes OpenMP spin: a CPU decode "
        "can get 10x slower)",
        shown_default=f"0 = half the CPUs, 1..{MAX_AUTO_TORCH_THREADS}",
        ge=0,
    )
    worker_queue: int = setting(
        64, Section.SPEECH, "bound on pending decode steps on the inference worker", ge=1
    )
    worker_batch: int = setting(
        16,  # a first chunk arriving meanwhile waits for the running batch: 16 keeps that near one batch on CPU
        Section.SPEECH,
        "most streams decoded in one batched Token2Wav call (the scheduler picks the most urgent)",
        ge=1,
    )
    voices: tuple[tuple[str, Path], ...] = setting(
        (),
        Section.SPEECH,
        "add a voice: a prompt wav (3-10 s of clean speech) selectable as audio.output.voice; repeatable",
        flag="--voice",
        shown_default="only the shipped 'default' voice",
        item=parse_voice_spec,
        repeat=True,
        metavar="NAME=PATH.wav",
    )
    default_voice: str = setting(
        "default", Section.SPEECH, "voice used when a session does not choose one", metavar="NAME"
    )
    max_audio_delta_ms: int = setting(
        100,
        Section.SPEECH,
        "longest audio slice per response.output_audio.delta, in ms",
        flag="--max-delta-ms",
        ge=MIN_AUDIO_DELTA_MS,
        le=MAX_AUDIO_DELTA_MS,
    )

    # logging
    log_level: LogLevel = setting("info", Section.LOGGING, "logging level")

    def __post_init__(self) -> None:
        check(self)

    @property
    def effective_torch_threads(self) -> int:
        """``torch_threads``, or the automatic choice when it is 0."""
        return self.torch_threads or default_torch_threads()

    @property
    def embedded_token2wav_dir(self) -> Path:
        """Where the tiny random-weight Token2Wav lives (generated on first start)."""
        return self.cache_dir / "token2wav-tiny"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        """Defaults, then ``STREAMVOICE_*`` variables, then ``overrides`` by setting name (None values ignored).

        Raises:
            realtime.settings.SettingError: a variable or override does not parse or is out of bounds (a
                ValueError naming the flag and the variable).
        """
        return build(cls, os.environ if environ is None else environ, overrides=overrides)
