"""`realtime serve`: start the OpenAI-Realtime WebSocket server (and the browser demo at ``/``).

Its flags are the settings of `realtime.config.ServerConfig`, declared there once: configuration comes from,
lowest to highest precedence, their defaults, ``STREAMVOICE_*`` environment variables, then the flags given.
Module-level imports stay light so ``--help`` is fast; torch, uvicorn and the app are imported inside `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from realtime import settings
from realtime.config import ServerConfig

HELP = "start the realtime WebSocket server (OpenAI Realtime protocol) and the browser demo"
DESCRIPTION = (
    "Serve the OpenAI Realtime API at ws://HOST:PORT/v1/realtime (and /realtime), with /health, /metrics "
    "and the browser demo at /. With no flags this is the EMBEDDED DEMO: a synthetic token source plus a "
    "tiny random-weight Token2Wav generated on first start into the cache folder; it shows the streaming "
    "pipeline working, it is not a voice model. For real speech use --backend sglang (a running SGLang "
    "server with Step-Audio-2-mini) or --backend sglang-engine, and --token2wav-dir with the real weights. "
    "Every flag also has an environment variable STREAMVOICE_<NAME> (shown in each flag's help); a flag given "
    "wins over its variable."
)

log = logging.getLogger("realtime.serve")
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register one flag per `ServerConfig` setting (`realtime.settings.add_arguments`)."""
    settings.add_arguments(parser, ServerConfig)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Defaults < ``STREAMVOICE_*`` variables < the flags given.

    Raises:
        realtime.settings.SettingError: a flag or environment variable is invalid (a ValueError naming both).
    """
    return settings.build(ServerConfig, os.environ, args)


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
    if config.log_level != "debug":  # aioice logs every ICE check of every WebRTC call at info
        logging.getLogger("aioice").setLevel(logging.WARNING)
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
    from realtime.http.capacity import (
        HEALTH_RESERVE,
        install_accept_error_log,
        open_descriptors,
        raise_open_file_limit,
    )
    from realtime.http.log_filters import install_log_filters
    from realtime.speech.runtime import DEMO_NOTICE, Runtime

    _AnnouncingServer = announcing_server_class()
    limits = raise_open_file_limit()  # before anything opens files: every connection is one
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
        install_accept_error_log(asyncio.get_running_loop(), runtime.metrics.accept_error)
        caps = app.state.connections.limits
        log.info(
            "open files: limit %d (hard %d), %d in use: up to %d connections (+%d for health checks), %s "
            "per client address",
            limits.soft,
            limits.hard,
            open_descriptors() or limits.in_use,
            caps.max_open,
            HEALTH_RESERVE,
            caps.max_per_address or "no cap",
        )
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
        sessions, requests = app.state.sessions, app.state.requests
        uvicorn_config = uvicorn.Config(
            app,
            log_level=config.log_level,
            lifespan="on",  # the app loads the VAD model before the first session
            access_log=False,
            # after the drain, uvicorn closes what is left; it never waits forever on a stuck task
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            **uvicorn_options(config, app.state.connections),
        )
        install_log_filters(runtime.metrics.transport_error)  # after uvicorn.Config set up its loggers
        server = _AnnouncingServer(
            uvicorn_config,
            ready,
            lambda: drain_sessions(runtime, sessions, config.drain_seconds, requests),
        )
        await server.serve(sockets=[sock])
    finally:
        await runtime.aclose()
        sock.close()
    return 0
