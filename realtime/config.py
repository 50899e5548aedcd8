"""Server configuration: one frozen dataclass, filled from defaults, ``STREAMVOICE_*`` env vars and CLI flags.

Precedence (lowest to highest): dataclass defaults < environment variables < explicit CLI flags. Every field
has an environment variable named ``STREAMVOICE_<FIELD NAME IN UPPER CASE>``; see `ENV_PREFIX` and
`ServerConfig.from_env`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

BackendKind = Literal["synthetic", "sglang", "sglang-engine"]
DialectName = Literal["auto", "ga", "beta"]
DtypeName = Literal["float32", "float16", "bfloat16"]

ENV_PREFIX = "STREAMVOICE_"
CACHE_ENV = "STREAMVOICE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/streamvoice")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Token2Wav hops (docs/TOKEN2WAV.md §4.1): a short first hop for latency, then the reference hop of 25.
DEFAULT_FIRST_HOP_TOKENS = 10
DEFAULT_HOP_TOKENS = 25
DEFAULT_HOP_GROWTH = 1.5  # hops ramp 10 -> 15 -> 23 -> 25 so no chunk starves the player (token2wav.stream)
MIN_HOP_TOKENS = 5  # below this the first Token2Wav call emits no audio (960*H - 3840 <= 0)
# A GPU-served 7B model streams roughly 60-100 tokens/s; real time needs >= ~32 tokens/s in TA4.
DEFAULT_SYNTHETIC_TOKENS_PER_SECOND = 80.0
DEFAULT_MAX_SESSIONS = 32
DEFAULT_WORKER_QUEUE = 64  # pending Token2Wav steps across all streams before submit() waits
# Streams decoded in one batched Token2Wav call. A batch's wall time grows with its size, and a first chunk
# that arrives meanwhile waits for the running batch: 16 keeps that wait near one steady batch on CPU.
DEFAULT_WORKER_BATCH = 16
DEFAULT_MAX_AUDIO_DELTA_MS = 100  # docs/PROTOCOL.md §7.2: 20-100 ms per output_audio.delta
DEFAULT_SGLANG_URL = "http://127.0.0.1:30000"
DEFAULT_MAX_SESSION_SECONDS = 60 * 60.0  # OpenAI GA: sessions end after 60 minutes (docs/PROTOCOL.md §1.4)
DEFAULT_MIN_ANSWER_TOKENS = 64  # smallest answer budget before older turns are dropped (~1.5 s of speech)
MAX_AUTO_TORCH_THREADS = 4  # small per-chunk kernels stop scaling beyond a few threads
# Limits that keep one client from wedging a session or exhausting memory (README "Security and limits").
DEFAULT_SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long loses its session (close 1008)
DEFAULT_WS_PING_INTERVAL_S = 20.0  # keepalive ping period; a dead peer is found within interval + timeout
DEFAULT_WS_PING_TIMEOUT_S = 20.0
DEFAULT_MAX_OUT_OF_BAND = 2  # concurrent conversation:"none" responses per session
DEFAULT_MAX_DECODER_STREAMS = 0  # 0 = sized from DEFAULT_DECODER_MEMORY_MB and the measured stream size
DEFAULT_DECODER_MEMORY_MB = 8192  # memory budget for live Token2Wav stream states (auto stream cap)
DEFAULT_DECODER_WAIT_S = 2.0  # how long a spoken response waits for a free decoder stream
DEFAULT_MAX_CONVERSATION_ITEMS = 1000
DEFAULT_MAX_CONVERSATION_MB = 64  # text and stored audio of one conversation
DEFAULT_MAX_CONVERSATION_AUDIO_S = 1800.0  # 30 minutes of stored speech, beyond any model context
DEFAULT_DRAIN_SECONDS = 10.0  # SIGTERM: how long active responses may finish before sessions close


def default_cache_dir() -> Path:
    """The folder for generated artefacts (the embedded tiny Token2Wav): ``$STREAMVOICE_CACHE`` or ~/.cache."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else DEFAULT_CACHE_DIR.expanduser()


def default_torch_threads() -> int:
    """Half the CPUs (the event loop, the LLM client and VAD need the rest), at least 1, at most 4."""
    return max(1, min(MAX_AUTO_TORCH_THREADS, (os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server process needs at start-up. Immutable; build a new one with `dataclasses.replace`.

    Attributes:
        host: interface to bind (127.0.0.1 by default; 0.0.0.0 to expose it).
        port: TCP port.
        backend: which LLM token source to use: ``synthetic`` (no model), ``sglang`` (HTTP server) or
            ``sglang-engine`` (in-process ``sglang.Engine``).
        model_path: Step-Audio-2 model folder or hub id (tokenizer + LLM weights) for the SGLang backends.
        sglang_url: base URL of a running SGLang server for ``backend="sglang"``.
        token2wav_dir: folder of Token2Wav weights (flow.pt, hift.pt, campplus.onnx, ...). ``None`` means the
            embedded demo: a tiny random-weight model generated once into ``cache_dir``.
        cache_dir: where the embedded tiny model is written.
        device: torch device of the Token2Wav model (``cpu``, ``cuda``, ``cuda:1``).
        dtype: torch dtype name of the Token2Wav model.
        first_hop_tokens: audio tokens in the first Token2Wav chunk (latency lever).
        hop_tokens: audio tokens per later chunk.
        hop_growth: each hop is at most this factor larger than the one before, until `hop_tokens`.
        voices: extra voices as (name, wav path) pairs; the shipped ``default`` voice is always present.
        default_voice: voice used when a session does not choose one.
        synthetic_tokens_per_second: emission rate of the synthetic backend.
        synthetic_seed: base seed of the synthetic backend's deterministic stream.
        max_sessions: concurrent WebSocket sessions accepted before new ones are refused.
        worker_queue: bounded number of pending Token2Wav steps on the inference worker.
        worker_batch: most streams the inference worker decodes in one batched Token2Wav call.
        max_audio_delta_ms: longest audio slice per ``output_audio.delta``.
        torch_threads: torch intra-op threads for Token2Wav; 0 picks `default_torch_threads()`. More threads
            than free cores makes OpenMP spin and can slow a CPU decode by 10x.
        log_level: logging level name.
        max_session_seconds: longest a WebSocket session may last; then it gets an ``error`` with code
            ``session_expired`` and is closed with 1000 (OpenAI's GA limit is 60 minutes).
        dialect: ``auto`` (GA unless the client asks for beta by header or subprotocol), or ``ga`` / ``beta``
            to force one event family for every connection (docs/PROTOCOL.md §2.1).
        api_key: when set, every WebSocket session must present this key (``Authorization: Bearer``, an
            ``api-key`` header, the ``openai-insecure-api-key.<key>`` subprotocol or ``?api_key=``); None
            (the default) accepts every client. ``/metrics`` and every ``/v1/`` HTTP route then need it too (Bearer
            or ``api-key`` header); ``/health`` and the demo page stay open.
        context_length: the LLM's context length in tokens; 0 (the default) uses what the backend reports
            (SGLang) or declares (synthetic: 16384). A smaller value caps every request below the model's limit.
        min_answer_tokens: the smallest answer budget a response may start with; when less of the context is
            left, the session's ``truncation`` setting drops the oldest turns or the response fails with
            ``context_length_exceeded``.
        send_timeout: seconds one frame may wait for a client that does not read (and a producer for room
            in the session's outbox); then the session closes with 1008 ``send_timeout``. Streamed HTTP
            answers use it for each chunk too.
        ws_ping_interval: seconds between WebSocket keepalive pings (0 disables them).
        ws_ping_timeout: seconds a pong may take; a dead or stuck peer is dropped within
            ``ws_ping_interval + ws_ping_timeout``.
        max_out_of_band_responses: concurrent ``conversation: "none"`` responses per session.
        max_decoder_streams: live Token2Wav streams (spoken responses) across the server; 0 sizes it from
            ``decoder_memory_mb`` and the measured state size of one stream.
        decoder_memory_mb: memory budget for live stream states when ``max_decoder_streams`` is 0.
        decoder_wait_seconds: how long a spoken response waits for a free stream before it is refused with
            ``decoder_capacity_reached``.
        max_conversation_items: items one conversation may hold.
        max_conversation_mb: text and audio bytes one conversation may hold.
        max_conversation_audio_seconds: seconds of audio one conversation may hold.
        allowed_origins: browser origins (``scheme://host[:port]``) allowed to open a WebSocket; ``*``
            allows any. Empty (the default): only pages served by this server and loopback pages. Clients
            that send no ``Origin`` header (SDKs, servers) are not affected.
        drain_seconds: on SIGTERM, how long active responses may finish before sessions close with 1001.
        backend_options: extra options of the SGLang backends (flags added by
            `realtime.backends.factory.add_backend_arguments` that are not fields here), by argparse dest.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    backend: BackendKind = "synthetic"
    model_path: str | None = None
    sglang_url: str = DEFAULT_SGLANG_URL
    token2wav_dir: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "cpu"
    dtype: DtypeName = "float32"
    first_hop_tokens: int = DEFAULT_FIRST_HOP_TOKENS
    hop_tokens: int = DEFAULT_HOP_TOKENS
    hop_growth: float = DEFAULT_HOP_GROWTH
    voices: tuple[tuple[str, Path], ...] = ()
    default_voice: str = "default"
    synthetic_tokens_per_second: float = DEFAULT_SYNTHETIC_TOKENS_PER_SECOND
    synthetic_seed: int = 0
    max_sessions: int = DEFAULT_MAX_SESSIONS
    worker_queue: int = DEFAULT_WORKER_QUEUE
    worker_batch: int = DEFAULT_WORKER_BATCH
    max_audio_delta_ms: int = DEFAULT_MAX_AUDIO_DELTA_MS
    torch_threads: int = 0
    log_level: str = "info"
    backend_options: Mapping[str, object] = field(default_factory=dict)
    api_key: str | None = None
    max_session_seconds: float = DEFAULT_MAX_SESSION_SECONDS
    dialect: DialectName = "auto"
    context_length: int = 0
    min_answer_tokens: int = DEFAULT_MIN_ANSWER_TOKENS
    send_timeout: float = DEFAULT_SEND_TIMEOUT_S
    ws_ping_interval: float = DEFAULT_WS_PING_INTERVAL_S
    ws_ping_timeout: float = DEFAULT_WS_PING_TIMEOUT_S
    max_out_of_band_responses: int = DEFAULT_MAX_OUT_OF_BAND
    max_decoder_streams: int = DEFAULT_MAX_DECODER_STREAMS
    decoder_memory_mb: int = DEFAULT_DECODER_MEMORY_MB
    decoder_wait_seconds: float = DEFAULT_DECODER_WAIT_S
    max_conversation_items: int = DEFAULT_MAX_CONVERSATION_ITEMS
    max_conversation_mb: int = DEFAULT_MAX_CONVERSATION_MB
    max_conversation_audio_seconds: float = DEFAULT_MAX_CONVERSATION_AUDIO_S
    allowed_origins: tuple[str, ...] = ()
    drain_seconds: float = DEFAULT_DRAIN_SECONDS

    def __post_init__(self) -> None:
        if self.backend not in get_args(BackendKind):
            raise ValueError(f"backend must be one of {get_args(BackendKind)}, got {self.backend!r}")
        if self.dtype not in get_args(DtypeName):
            raise ValueError(f"dtype must be one of {get_args(DtypeName)}, got {self.dtype!r}")
        if not MIN_HOP_TOKENS <= self.first_hop_tokens:
            raise ValueError(f"first_hop_tokens must be >= {MIN_HOP_TOKENS}, got {self.first_hop_tokens}")
        if not MIN_HOP_TOKENS <= self.hop_tokens:
            raise ValueError(f"hop_tokens must be >= {MIN_HOP_TOKENS}, got {self.hop_tokens}")
        if not self.hop_growth >= 1.0:
            raise ValueError(f"hop_growth must be >= 1, got {self.hop_growth}")
        if self.synthetic_tokens_per_second <= 0:
            raise ValueError("synthetic_tokens_per_second must be > 0")
        if self.max_sessions < 1 or self.worker_queue < 1 or self.worker_batch < 1:
            raise ValueError("max_sessions, worker_queue and worker_batch must be >= 1")
        if self.dialect not in get_args(DialectName):
            raise ValueError(f"dialect must be one of {get_args(DialectName)}, got {self.dialect!r}")
        if self.max_session_seconds <= 0:
            raise ValueError("max_session_seconds must be > 0")
        if self.context_length < 0:
            raise ValueError("context_length must be >= 0 (0 = what the backend reports)")
        if self.min_answer_tokens < 1:
            raise ValueError("min_answer_tokens must be >= 1")
        if self.torch_threads < 0:
            raise ValueError("torch_threads must be >= 0 (0 = automatic)")
        if not 20 <= self.max_audio_delta_ms <= 100:  # docs/PROTOCOL.md §7.2
            raise ValueError("max_audio_delta_ms must be within 20..100")
        if min(self.send_timeout, self.ws_ping_timeout, self.decoder_wait_seconds) <= 0:
            raise ValueError("send_timeout, ws_ping_timeout and decoder_wait_seconds must be > 0")
        if self.ws_ping_interval < 0 or self.drain_seconds < 0:
            raise ValueError("ws_ping_interval and drain_seconds must be >= 0")
        if self.max_out_of_band_responses < 0 or self.max_decoder_streams < 0:
            raise ValueError("max_out_of_band_responses and max_decoder_streams must be >= 0")
        if min(self.decoder_memory_mb, self.max_conversation_items, self.max_conversation_mb) < 1:
            raise ValueError("decoder_memory_mb, max_conversation_items and max_conversation_mb must be >= 1")
        if self.max_conversation_audio_seconds <= 0:
            raise ValueError("max_conversation_audio_seconds must be > 0")
        if not 0 < self.port < 65536 and self.port != 0:
            raise ValueError(f"port out of range: {self.port}")

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
        """Defaults, then ``STREAMVOICE_*`` variables, then ``overrides`` (None values are ignored).

        ``STREAMVOICE_VOICES`` is a comma-separated list of ``name=path.wav``.

        Raises:
            ValueError: a variable or override does not parse or fails validation.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name == "backend_options":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse_field(f.name, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        return cls(**values)  # type: ignore[arg-type]


def parse_voice_spec(spec: str) -> tuple[str, Path]:
    """Parse ``name=path.wav`` (the ``--voice`` flag).

    Raises:
        ValueError: no ``=``, empty name or empty path.
    """
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"voice must be NAME=PATH.wav, got {spec!r}")
    return name, Path(path).expanduser()


_INT_FIELDS = {"port", "first_hop_tokens", "hop_tokens", "synthetic_seed", "max_sessions", "worker_queue"}
_INT_FIELDS |= {"max_audio_delta_ms", "torch_threads", "context_length", "min_answer_tokens", "worker_batch"}
_INT_FIELDS |= {"max_out_of_band_responses", "max_decoder_streams"}
_INT_FIELDS |= {"decoder_memory_mb", "max_conversation_items", "max_conversation_mb"}
_FLOAT_FIELDS = {"synthetic_tokens_per_second", "max_session_seconds", "hop_growth", "send_timeout"}
_FLOAT_FIELDS |= {"ws_ping_interval", "ws_ping_timeout", "decoder_wait_seconds", "drain_seconds"}
_FLOAT_FIELDS |= {"max_conversation_audio_seconds"}
_PATH_FIELDS = {"token2wav_dir", "cache_dir"}


def _parse_field(name: str, raw: str) -> object:
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in _FLOAT_FIELDS:
            return float(raw)
        if name == "allowed_origins":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if name in _PATH_FIELDS:
            return Path(raw).expanduser()
        if name == "voices":
            return tuple(parse_voice_spec(part) for part in raw.split(",") if part.strip())
        if name == "backend":
            return cast(BackendKind, raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc
