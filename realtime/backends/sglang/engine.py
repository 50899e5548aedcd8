"""In-process ``sglang.Engine`` backend (docs/SGLANG.md §6.5): no HTTP hop, same chunks as ``/generate``.

``sglang`` is imported only by `SGLangEngineBackend.start`, never at module import: importing SGLang's engine
module switches the process's asyncio event-loop policy to uvloop, and the package is an optional extra.

Process-level caveats of ``sglang.Engine`` 0.5.23 and what this backend does about them:

1. ``Engine.shutdown()`` calls ``kill_process_tree(os.getpid(), include_parent=False)``: it SIGKILLs *every*
   child of the server process, not only SGLang's (Token2Wav workers, test servers, ffmpeg...). The engine
   registers it with ``atexit`` too. We never call it: after construction the atexit hook is unregistered,
   and `aclose` stops SGLang's subprocess watchdog and terminates only the processes that appeared while the
   engine was being built (then kills those that do not exit). Build the engine before starting other
   children (the runtime starts the backend first).
2. The first request binds SGLang's receive loop to the calling event loop, and, on the main thread, installs
   loop handlers for SIGTERM (drain, then exit) and SIGQUIT (kill the whole process tree when a child dies).
   All requests must come from that one loop, which is the server's loop here.
3. Construction blocks for the whole model load, so it runs in a worker thread during start-up. Off the main
   thread SGLang skips its launch-phase SIGQUIT handler (it logs a warning saying so).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from realtime.backends.base import BackendError, FinishReason, GenerationInput, TokenChunk, answer_budget
from realtime.backends.sglang.stream import (
    ChunkDecoder,
    ServerSampling,
    StreamMode,
    sampling_payload,
    server_abort_error,
    sglang_error,
)
from realtime.backends.sglang.vocab import ModelVocab, ModelVocabBackend

log = logging.getLogger(__name__)

# Engine settings we rely on: prompts are ids, deltas keep per-chunk JSON small (docs/SGLANG.md §6.5, §7).
DEFAULT_ENGINE_ARGS: Mapping[str, object] = {
    "skip_tokenizer_init": True,
    "incremental_streaming_output": True,
}
CHILD_EXIT_TIMEOUT_S = 10.0


class _TokenizerManager(Protocol):
    def abort_request(self, rid: str = "", abort_all: bool = False) -> None: ...


class EngineLike(Protocol):
    """The part of ``sglang.Engine`` this backend uses (a stand-in implements it in tests)."""

    tokenizer_manager: Any

    async def async_generate(self, **kwargs: Any) -> Any: ...


EngineFactory = Callable[..., EngineLike]


@dataclass(frozen=True)
class SGLangEngineConfig:
    """How to build the in-process engine.

    Attributes:
        model_path: model folder or hub id passed to ``sglang.Engine(model_path=...)``.
        model_dir: local folder with ``tokenizer.json``; defaults to ``model_path``.
        engine_args: extra ``ServerArgs`` keyword arguments (``mem_fraction_static``, ``load_format`` ...);
            they override `DEFAULT_ENGINE_ARGS`.
        check_audio: compare the reported prompt length with the expected audio expansion.
        sampling: server-wide sampling overrides.
        context_length: use this context length instead of the engine's (it may only be smaller).
    """

    model_path: str
    model_dir: Path | None = None
    engine_args: Mapping[str, object] = field(default_factory=dict)
    check_audio: bool = True
    sampling: ServerSampling = field(default_factory=ServerSampling)
    context_length: int | None = None


def _import_engine() -> EngineFactory:
    try:
        from sglang.srt.entrypoints.engine import Engine
    except ImportError as exc:
        raise BackendError(
            "backend_unavailable",
            f"--backend sglang-engine needs SGLang: pip install 'streamvoice[sglang]' ({exc})",
        ) from exc
    return cast(EngineFactory, Engine)


class SGLangEngineBackend(ModelVocabBackend):
    """`realtime.backends.base.LLMBackend` on ``sglang.Engine.async_generate(stream=True)``.

    Args:
        config: engine settings.
        engine_factory: builds the engine (default: ``sglang.Engine``, imported lazily).
        vocab: tokenizer and layout instead of loading them from ``config.model_dir`` (tests).
    """

    def __init__(
        self,
        config: SGLangEngineConfig,
        *,
        engine_factory: EngineFactory | None = None,
        vocab: ModelVocab | None = None,
    ) -> None:
        self._config = config
        self._engine_factory = engine_factory
        if vocab is not None:
            self._use_vocab(vocab)
        self._engine: EngineLike | None = None
        self._engine_pids: list[int] = []
        self._active: set[str] = set()
        self._aborted: set[str] = set()
        self.last_stream_mode = StreamMode.UNKNOWN

    @property
    def name(self) -> str:
        return "sglang-engine"

    async def start(self) -> None:
        """Load the tokenizer, then build the engine in a worker thread (minutes for real weights).

        Raises:
            BackendError: sglang missing (``backend_unavailable``), bad tokenizer folder, or engine failure.
        """
        if self._vocab is None:
            folder = self._config.model_dir or self._config.model_path
            self._use_vocab(await asyncio.to_thread(ModelVocab.from_model_dir, folder))
        factory = self._engine_factory or _import_engine()
        kwargs = {**DEFAULT_ENGINE_ARGS, **self._config.engine_args, "model_path": self._config.model_path}
        before = _child_pids()
        try:
            engine = await asyncio.to_thread(lambda: factory(**kwargs))
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError("engine_failed", f"sglang.Engine could not start: {exc}") from exc
        shutdown = getattr(engine, "shutdown", None)
        if shutdown is not None:
            atexit.unregister(shutdown)  # caveat 1: its kill_process_tree would take our other children too
        self._engine_pids = sorted(_child_pids() - before)
        self._engine = engine
        self._use_context_length(_engine_context_length(engine, self._config.context_length), "sglang.Engine")
        log.info(
            "sglang.Engine started for %s (child processes %s)", self._config.model_path, self._engine_pids
        )

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        """Stream new ids of one reply; closing the iterator aborts the request by rid."""
        engine = self._require_engine()
        prompt = await self._build(request)
        rid = request.rid
        kwargs: dict[str, Any] = {
            "input_ids": list(prompt.input_ids),
            "sampling_params": sampling_payload(
                request.sampling,
                self.vocab.eot,
                self._config.sampling,
                max_new_tokens=answer_budget(
                    request.sampling, prompt.expected_prompt_tokens, self.context_length
                ),
            ),
            "rid": rid,
            "stream": True,
        }
        if prompt.audio:
            kwargs["audio_data"] = prompt.audio_data()
        decoder = ChunkDecoder(prompt, check_audio=self._config.check_audio)
        self._active.add(rid)
        finished = False
        stream: AsyncIterator[dict[str, Any]] | None = None
        try:
            try:
                stream = await engine.async_generate(**kwargs)
                assert stream is not None
                async for raw in stream:
                    chunk = decoder.decode(raw)
                    self.last_stream_mode = decoder.mode
                    finished = chunk.finish_reason is not None
                    if chunk.finish_reason is FinishReason.ABORT and rid not in self._aborted:
                        raise server_abort_error(decoder.finish_detail)
                    yield chunk
                    if finished:
                        break
            except ValueError as exc:  # SGLang reports bad requests (duplicate rid, too long) this way
                raise sglang_error(str(exc)) from exc
            if not finished:
                raise BackendError(
                    "stream_cut", f"sglang.Engine ended after {decoder.seen} ids without a finish"
                )
        finally:
            if not finished:
                self._abort_now(rid)
            if stream is not None:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            self._active.discard(rid)
            self._aborted.discard(rid)

    async def abort(self, rid: str) -> None:
        """Abort by rid through the tokenizer manager; idempotent, never raises."""
        if rid in self._active:
            self._aborted.add(rid)
        self._abort_now(rid)

    async def check_reachable(self) -> None:
        """The in-process engine is reachable while it exists (after `start`, before `aclose`)."""
        if self._engine is None:
            raise BackendError("backend_unavailable", "the in-process SGLang engine is not running")

    async def aclose(self) -> None:
        """Stop SGLang's watchdog and terminate only the engine's own child processes (caveat 1)."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        watchdog = getattr(engine.tokenizer_manager, "_subprocess_watchdog", None)
        if watchdog is not None:
            watchdog.stop()  # otherwise it SIGQUITs this process when the children exit below
        await asyncio.to_thread(_terminate, self._engine_pids)

    def _abort_now(self, rid: str) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            cast(_TokenizerManager, engine.tokenizer_manager).abort_request(rid=rid)
        except Exception as exc:  # abort is best effort: the request may be gone or the engine stopping
            log.warning("could not abort sglang.Engine request %s: %s", rid, exc)

    def _require_engine(self) -> EngineLike:
        if self._engine is None:
            raise BackendError(
                "not_started", "the sglang-engine backend was used before start() or after aclose()"
            )
        return self._engine


def _engine_context_length(engine: EngineLike, override: int | None) -> int:
    """The model config's ``context_len``, lowered to what the scheduler admits (``max_req_input_len`` + 1)
    and to ``override``.

    Raises:
        BackendError: ``wrong_server`` when the engine reports neither and no override is configured.
    """
    manager = engine.tokenizer_manager
    limits = [override] if override is not None else []
    context = getattr(getattr(manager, "model_config", None), "context_len", None)
    if isinstance(context, int) and context > 0:
        limits.append(context)
    admitted = getattr(manager, "max_req_input_len", None)
    if isinstance(admitted, int) and admitted > 0:
        limits.append(admitted + 1)
    if not limits:
        raise BackendError("wrong_server", "sglang.Engine reports no context length: pass --context-length")
    return min(limits)


def _child_pids() -> set[int]:
    import psutil  # type: ignore[import-untyped]  # a dependency of sglang; only this backend needs it

    return {child.pid for child in psutil.Process(os.getpid()).children(recursive=True)}


def _terminate(pids: list[int]) -> None:
    """SIGTERM the given processes (and their children), wait, then SIGKILL the survivors."""
    import psutil  # type: ignore[import-untyped]

    procs: list[Any] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs.extend([proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=CHILD_EXIT_TIMEOUT_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
