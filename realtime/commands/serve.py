"""`realtime serve`: start the OpenAI-Realtime WebSocket server (and the browser demo at ``/``).

Configuration comes from, lowest to highest precedence: built-in defaults, ``STREAMVOICE_*`` environment
variables (one per `realtime.config.ServerConfig` field), then these flags. Module-level imports stay light so
``--help`` is fast; torch, uvicorn and the app are imported inside `run`.

Size: just over 400 lines: every ``serve`` flag with its help text, and the start-up sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from realtime.commands.limits import add_limit_arguments, parse_origins
from realtime.commands.limits import flag as _flag
from realtime.config import (
    DEFAULT_FIRST_HOP_TOKENS,
    DEFAULT_HOP_GROWTH,
    DEFAULT_HOP_TOKENS,
    DEFAULT_HOST,
    DEFAULT_MAX_AUDIO_DELTA_MS,
    DEFAULT_MAX_SESSION_SECONDS,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MIN_ANSWER_TOKENS,
    DEFAULT_PORT,
    DEFAULT_SYNTHETIC_TOKENS_PER_SECOND,
    DEFAULT_WORKER_BATCH,
    DEFAULT_WORKER_QUEUE,
    ServerConfig,
    parse_voice_spec,
)

HELP = "start the realtime WebSocket server (OpenAI Realtime protocol) and the browser demo"
DESCRIPTION = (
    "Serve the OpenAI Realtime API at ws://HOST:PORT/v1/realtime (and /realtime), with /health, /metrics "
    "and the browser demo at /. With no flags this is the EMBEDDED DEMO: a synthetic token source plus a "
    "tiny random-weight Token2Wav generated on first start into the cache folder; it shows the streaming "
    "pipeline working, it is not a voice model. For real speech use --backend sglang (a running SGLang "
    "server with Step-Audio-2-mini) or --backend sglang-engine, and --token2wav-dir with the real weights. "
    "Every flag also has an environment variable STREAMVOICE_<FIELD> (shown in each flag's help)."
)

log = logging.getLogger("realtime.serve")
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)

# flag dest -> ServerConfig field, for the flags whose names differ from the field
_FIELD_OF_DEST = {
    "first_chunk": "first_hop_tokens",
    "hop": "hop_tokens",
    "hop_growth": "hop_growth",
    "synthetic_rate": "synthetic_tokens_per_second",
    "max_delta_ms": "max_audio_delta_ms",
}
_OWN_DESTS = {
    "api_key",
    "dialect",
    "host",
    "port",
    "backend",
    "token2wav_dir",
    "cache_dir",
    "device",
    "dtype",
    "voice",
    "default_voice",
    "first_chunk",
    "hop",
    "hop_growth",
    "synthetic_rate",
    "synthetic_seed",
    "max_sessions",
    "max_session_seconds",
    "worker_queue",
    "worker_batch",
    "max_delta_ms",
    "log_level",
    "torch_threads",
    "context_length",
    "min_answer_tokens",
    "allowed_origins",
    "send_timeout",
    "ws_ping_interval",
    "ws_ping_timeout",
    "max_out_of_band_responses",
    "max_decoder_streams",
    "decoder_memory_mb",
    "decoder_wait_seconds",
    "max_conversation_items",
    "max_conversation_mb",
    "max_conversation_audio_seconds",
    "drain_seconds",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the serve flags, then the backend flags from `realtime.backends.factory`."""
    net = parser.add_argument_group("network")
    _flag(net, "--host", env="HOST", default=DEFAULT_HOST, help="interface to bind; 0.0.0.0 exposes it")
    _flag(net, "--port", env="PORT", default=str(DEFAULT_PORT), type=int, help="TCP port; 0 picks a free one")
    _flag(
        net,
        "--max-sessions",
        env="MAX_SESSIONS",
        default=str(DEFAULT_MAX_SESSIONS),
        type=int,
        help="concurrent WebSocket sessions before new ones are refused",
    )

    _flag(
        net,
        "--max-session-seconds",
        env="MAX_SESSION_SECONDS",
        default=f"{DEFAULT_MAX_SESSION_SECONDS:g} (60 minutes, like OpenAI)",
        type=float,
        help="session duration limit; then the client gets a session_expired error and close 1000",
    )
    _flag(
        net,
        "--dialect",
        env="DIALECT",
        default="auto",
        choices=["auto", "ga", "beta"],
        help="Realtime event family: auto = GA unless a client sends OpenAI-Beta: realtime=v1 or the "
        "openai-beta.realtime-v1 subprotocol; ga or beta force one for every connection",
    )
    _flag(
        net,
        "--api-key",
        env="API_KEY",
        default="none: every client is accepted",
        metavar="KEY",
        help="require this key from WebSocket clients (Authorization: Bearer, api-key header, "
        "openai-insecure-api-key.KEY subprotocol or ?api_key=); a wrong or missing key gets an "
        "invalid_api_key error and close 1008. Prefer the env variable: flags show up in ps",
    )

    _flag(
        net,
        "--allowed-origins",
        env="ALLOWED_ORIGINS (comma-separated)",
        default="loopback pages and pages served by this server under an IP address",
        type=parse_origins,
        metavar="ORIGIN[,ORIGIN...]",
        help="browser origins (scheme://host[:port]) allowed to open WebSocket sessions, or '*' for any; "
        "others get origin_not_allowed and close 1008. Clients without an Origin header are not affected",
    )
    add_limit_arguments(parser)

    llm = parser.add_argument_group("LLM backend")
    _flag(
        llm,
        "--backend",
        env="BACKEND",
        default="synthetic",
        choices=["synthetic", "sglang", "sglang-engine"],
        help="token source: synthetic (no model, the embedded demo), sglang (a running SGLang HTTP "
        "server) or sglang-engine (SGLang in this process)",
    )
    _flag(
        llm,
        "--synthetic-rate",
        env="SYNTHETIC_TOKENS_PER_SECOND",
        type=float,
        default=str(DEFAULT_SYNTHETIC_TOKENS_PER_SECOND),
        help="tokens per second the synthetic backend emits (a GPU-served 7B model does ~60-100)",
    )
    _flag(
        llm,
        "--synthetic-seed",
        env="SYNTHETIC_SEED",
        default="0",
        type=int,
        help="seed of the synthetic backend's deterministic replies",
    )
    _flag(
        llm,
        "--context-length",
        env="CONTEXT_LENGTH",
        default="0 = what the backend reports (synthetic: 16384)",
        type=int,
        help="LLM context length in tokens (prompt + answer); a value below the model's caps every request",
    )
    _flag(
        llm,
        "--min-answer-tokens",
        env="MIN_ANSWER_TOKENS",
        default=str(DEFAULT_MIN_ANSWER_TOKENS),
        type=int,
        help="smallest answer budget a response starts with: with less context left, the session's "
        "truncation setting drops the oldest turns, or the response fails with context_length_exceeded",
    )
    from realtime.backends.factory import add_backend_arguments

    add_backend_arguments(llm)

    speech = parser.add_argument_group("speech decoder (Token2Wav)")
    _flag(
        speech,
        "--token2wav-dir",
        env="TOKEN2WAV_DIR",
        default="the embedded tiny random-weight model",
        help="folder with the Token2Wav weights (flow.yaml, flow.pt, hift.pt, campplus.onnx, "
        "speech_tokenizer_v2_25hz.onnx)",
    )
    _flag(
        speech,
        "--cache-dir",
        env="CACHE_DIR",
        default="$STREAMVOICE_CACHE or ~/.cache/streamvoice",
        help="where the embedded tiny Token2Wav is generated on first start",
    )
    _flag(
        speech, "--device", env="DEVICE", default="cpu", help="torch device of Token2Wav: cpu, cuda, cuda:1"
    )
    _flag(
        speech,
        "--dtype",
        env="DTYPE",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="torch dtype of Token2Wav",
    )
    _flag(
        speech,
        "--first-chunk",
        env="FIRST_HOP_TOKENS",
        default=str(DEFAULT_FIRST_HOP_TOKENS),
        type=int,
        help="audio tokens in the first Token2Wav chunk (smaller = earlier first audio; >= 5)",
    )
    _flag(
        speech,
        "--hop",
        env="HOP_TOKENS",
        default=str(DEFAULT_HOP_TOKENS),
        type=int,
        help="audio tokens per later Token2Wav chunk (the reference uses 25)",
    )
    _flag(
        speech,
        "--hop-growth",
        env="HOP_GROWTH",
        default=f"{DEFAULT_HOP_GROWTH:g}",
        type=float,
        help="each hop may be at most this factor larger than the previous one until --hop (10 -> 15 -> 23 "
        "-> 25 by default), so the second chunk is ready before the first has played; a large value jumps "
        "straight to --hop",
    )
    _flag(
        speech,
        "--torch-threads",
        env="TORCH_THREADS",
        default="0 = half the CPUs, 1..4",
        type=int,
        help="torch intra-op threads for Token2Wav on CPU (more than the free cores makes decoding much slower)",
    )
    _flag(
        speech,
        "--worker-queue",
        env="WORKER_QUEUE",
        default=str(DEFAULT_WORKER_QUEUE),
        type=int,
        help="bound on pending decode steps on the inference worker",
    )
    _flag(
        speech,
        "--worker-batch",
        env="WORKER_BATCH",
        default=str(DEFAULT_WORKER_BATCH),
        type=int,
        help="most streams decoded in one batched Token2Wav call (the scheduler picks the most urgent)",
    )
    _flag(
        speech,
        "--voice",
        env="VOICES (comma-separated)",
        default="only the shipped 'default' voice",
        action="append",
        metavar="NAME=PATH.wav",
        help="add a voice: a prompt wav (3-10 s of clean speech) selectable as audio.output.voice; "
        "repeatable",
    )
    _flag(
        speech,
        "--default-voice",
        env="DEFAULT_VOICE",
        default="default",
        help="voice used when a session does not choose one",
    )
    _flag(
        speech,
        "--max-delta-ms",
        env="MAX_AUDIO_DELTA_MS",
        default=str(DEFAULT_MAX_AUDIO_DELTA_MS),
        type=int,
        help="longest audio slice per response.output_audio.delta, 20-100 ms",
    )

    logs = parser.add_argument_group("logging")
    _flag(
        logs,
        "--log-level",
        env="LOG_LEVEL",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Defaults < env vars < flags.

    Raises:
        ValueError: a flag or environment variable is invalid.
    """
    overrides: dict[str, Any] = {}
    backend_options: dict[str, object] = {}
    fields = set(ServerConfig.__dataclass_fields__)
    for dest, value in vars(args).items():
        if dest.startswith("_") or dest == "command":
            continue
        if dest == "voice":
            overrides["voices"] = tuple(parse_voice_spec(spec) for spec in value)
        elif dest in _FIELD_OF_DEST:
            overrides[_FIELD_OF_DEST[dest]] = value
        elif dest in fields:
            overrides[dest] = value
        elif dest not in _OWN_DESTS and value is not None:
            backend_options[dest] = value
    if backend_options:
        overrides["backend_options"] = backend_options
    for path_field in ("token2wav_dir", "cache_dir"):
        if isinstance(overrides.get(path_field), str):
            from pathlib import Path

            overrides[path_field] = Path(overrides[path_field]).expanduser()
    return ServerConfig.from_env(**overrides)


def run(args: argparse.Namespace) -> int:
    """Build the runtime, serve until interrupted, close everything."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"realtime serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # OpenMP's default spin-waiting makes idle torch threads burn the cores the event loop, the VAD and
    # other sessions need; on a busy 2-core box it made decode steps 10-40x slower. Must be set before torch
    # is imported (inside `serve`); an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        code = asyncio.run(serve(config))
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        code = INTERRUPTED_EXIT_CODE
    # Everything is closed by now (sessions, worker thread, backend). Leave without the interpreter's
    # finalisation: with OMP_NUM_THREADS > 1, tearing down torch's thread pools after the worker thread is
    # gone aborted the process ("terminate called without an active exception", exit -6) in about one
    # shutdown in three, turning a clean Ctrl-C or SIGTERM into a crash report.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def serve(config: ServerConfig) -> int:
    """Run the server for ``config`` until cancelled or interrupted; returns the process exit code."""
    import uvicorn

    from realtime.commands.uvicorn_server import SHUTDOWN_GRACE_S, announcing_server_class, drain_sessions
    from realtime.errors import ResponseFailure
    from realtime.http.app import create_app, uvicorn_options
    from realtime.speech.runtime import DEMO_NOTICE, Runtime

    _AnnouncingServer = announcing_server_class()
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return 1
    host, port = sock.getsockname()[:2]
    try:
        runtime = await Runtime.create(config)
    except ResponseFailure as exc:
        log.error("start-up failed (%s): %s", exc.code, exc.message)
        sock.close()
        return 1
    try:
        app = create_app(runtime)
        shown = f"[{host}]" if ":" in host else host
        if runtime.is_embedded_demo:
            log.warning(DEMO_NOTICE)
        log.info(
            "backend=%s decoder=%s voices=%s", runtime.backend.name, runtime.decoder, runtime.voices.names()
        )
        ready = (
            f"streamvoice ready: demo page http://{shown}:{port}/  realtime ws://{shown}:{port}/v1/realtime  "
            f"health http://{shown}:{port}/health"
        )
        sessions = app.state.sessions
        server = _AnnouncingServer(
            uvicorn.Config(
                app,
                log_level=config.log_level,
                lifespan="on",  # the app loads the VAD model before the first session
                access_log=False,
                # after the drain, uvicorn closes what is left; it never waits forever on a stuck task
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                **uvicorn_options(config),
            ),
            ready,
            lambda: drain_sessions(runtime, sessions, config.drain_seconds),
        )
        await server.serve(sockets=[sock])
    finally:
        await runtime.aclose()
        sock.close()
    return 0
