"""The server's shared runtime: LLM backend, Token2Wav on its inference worker, voices and metrics.

One `Runtime` serves every session of a process. Build it with ``await Runtime.create(config)`` and close it
with ``await runtime.aclose()``. A response calls `Runtime.reply` once (a `realtime.speech.reply.ReplyProducer`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

from realtime.audio import PCM_RATE
from realtime.backends.base import BackendError, GenerationInput, LLMBackend
from realtime.config import ServerConfig
from realtime.errors import SpeechError
from realtime.metrics import Metrics
from realtime.speech.admission import DecoderAdmission
from realtime.speech.decoder import SpeechSetup
from realtime.speech.engine import EngineVoice, SpeechEngine, StepRequest, Token2WavEngine
from realtime.speech.pipeline import stream_reply
from realtime.speech.reply import PipelineEvent, UsageMeter
from realtime.speech.streams import auto_stream_limit
from realtime.speech.transcribe import TranscriptionSlots
from realtime.speech.voice_store import VoiceFolder
from realtime.speech.voices import VoiceRegistry
from realtime.speech.worker import InferenceWorker

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_SIZE: Literal["tiny"] = "tiny"
EMBEDDED_MODEL_SEED = 0
UPLOADED_VOICES_DIR = "voices"  # under the cache folder: voices uploaded with POST /v1/audio/voices
_COMPLETE_MARKER = ".streamvoice-complete"  # written last: a half-made cache folder is rebuilt
BYTES_PER_MB = 1024 * 1024
# Warm-up's capacity measurement: streams decoded side by side and steady windows each; small enough to cost a
# fraction of a second on the embedded CPU decoder, enough that admission's first figures are measured ones.
WARM_UP_STREAMS = 4
WARM_UP_ROUNDS = 3

DEMO_NOTICE = (
    "EMBEDDED DEMO: the synthetic token source plus a Token2Wav decoder with RANDOM WEIGHTS. What you hear "
    "is the streaming pipeline working (tokens -> codes -> PCM chunks as soon as they are decoded), not a "
    "voice model: the audio is noise-like and the transcript is canned words. For real speech, serve "
    "Step-Audio-2-mini with SGLang and point this server at it and at the real Token2Wav weights: "
    "`realtime serve --backend sglang --sglang-url http://127.0.0.1:30000 --model-path <Step-Audio-2-mini dir> "
    "--token2wav-dir <Step-Audio-2-mini dir>/token2wav` (or --backend sglang-engine to run SGLang in-process)."
)


class Runtime:
    """Backend + speech engine + voices + metrics shared by all sessions.

    Build with `create`; the constructor takes ready parts (tests inject a backend and a worker).

    Attributes:
        config: the configuration it was built from.
        backend: the LLM token source.
        voices: voice registry (names -> prompt wavs, each primed on the worker).
        metrics: Prometheus metrics on a private registry.
        is_embedded_demo: True when the backend is synthetic or the decoder has random weights: the output
            is the pipeline working, not a voice model speaking.
        sample_rate: output PCM rate (24 kHz).
        decoder: short description of the Token2Wav weights (for /health and logs).
        stream_bytes: memory one decoder stream holds (measured by `warm_up`; 0 before).
        decoder_streams: the admission gate every spoken answer passes, whatever its door: a memory slot
            (sized by `warm_up` when automatic) and real-time room (realtime/speech/admission.py).
        transcriptions: the server-wide cap on transcriptions running at once (HTTP and Realtime).
        draining: set on shutdown (SIGTERM): no new sessions or responses start; ``/health`` reports
            ``draining`` and readiness fails, so a load balancer sends new sessions elsewhere while open ones
            finish.
    """

    def __init__(
        self,
        config: ServerConfig,
        backend: LLMBackend,
        worker: InferenceWorker[SpeechEngine],
        voices: VoiceRegistry[EngineVoice],
        metrics: Metrics,
        *,
        decoder: str = "",
        random_weights: bool = False,
        sample_rate: int = PCM_RATE,
    ) -> None:
        self.config = config
        self.backend = backend
        self.voices = voices
        self.metrics = metrics
        self.sample_rate = sample_rate
        self.decoder = decoder
        self.is_embedded_demo = backend.name == "synthetic" or random_weights
        self._worker = worker
        self._closed = False
        self.voice_folder = VoiceFolder(config.cache_dir / UPLOADED_VOICES_DIR)
        self.uploaded_voices: set[str] = set()
        self.stream_bytes = 0
        self.draining = False
        self.decoder_streams = DecoderAdmission(
            self._stream_limit(),
            (lambda streams: worker.capacity(streams, self.sample_rate))
            if config.realtime_admission
            else None,
            headroom=config.decoder_headroom,
            metrics=metrics,
        )
        self.transcriptions = TranscriptionSlots(
            config.max_transcriptions, config.transcription_wait_seconds, metrics
        )

    def _stream_limit(self) -> int:
        config = self.config
        if config.max_decoder_streams:
            return config.max_decoder_streams
        # a session runs at most one in-band and max_out_of_band_responses spoken responses at once
        ceiling = config.max_sessions * (1 + config.max_out_of_band_responses)
        return auto_stream_limit(self.stream_bytes, config.decoder_memory_mb * BYTES_PER_MB, ceiling)

    @classmethod
    async def create(cls, config: ServerConfig) -> Runtime:
        """Build the backend, load Token2Wav on its worker, prime every voice, warm up.

        Raises:
            BackendError: the backend could not start.
            SpeechError: a voice file is missing or could not be loaded.
            Exception: Token2Wav failed to load.
        """
        from realtime.backends.factory import create_backend

        voices: VoiceRegistry[EngineVoice] = VoiceRegistry.from_specs(
            config.voices, default=config.default_voice
        )
        random_weights = config.token2wav_dir is None
        model_dir = await ensure_embedded_token2wav(config) if random_weights else config.token2wav_dir
        assert model_dir is not None
        backend = create_backend(config)
        await backend.start()
        threads = config.effective_torch_threads

        def load() -> SpeechEngine:
            return Token2WavEngine.load(
                model_dir,
                device=config.device,
                dtype=config.dtype,
                threads=threads,
                first_hop_tokens=config.first_hop_tokens,
                hop_tokens=config.hop_tokens,
                hop_growth=config.hop_growth,
            )

        metrics = Metrics()
        worker: InferenceWorker[SpeechEngine] = InferenceWorker(
            load,
            max_pending=config.worker_queue,
            max_batch=config.worker_batch,
            on_batch=metrics.observe_batch,
        )
        try:
            await worker.start()
            runtime = cls(
                config,
                backend,
                worker,
                voices,
                metrics,
                decoder=f"{'random-weight tiny ' if random_weights else ''}Token2Wav from {model_dir}",
                random_weights=random_weights,
                sample_rate=await worker.run(lambda engine: engine.sample_rate),
            )
            await runtime.load_voices()
            await runtime.load_uploaded_voices()
            await runtime.warm_up()
        except BaseException:
            await worker.aclose()
            await backend.aclose()
            raise
        return runtime

    async def load_voices(self) -> None:
        """Prime every registered voice on the worker (prompt tokens, speaker embedding, caches).

        Raises:
            SpeechError: a voice could not be loaded (code ``voice_load_failed``).
        """
        for name in self.voices.names():
            path = self.voices.path(name)
            try:
                state = await self._worker.run(_voice_loader(path))
            except Exception as exc:
                raise SpeechError("voice_load_failed", f"Voice {name!r} ({path}): {exc}") from exc
            self.voices.set_loaded(name, state)
            logger.info("voice %r loaded from %s", name, path)

    async def load_uploaded_voices(self) -> None:
        """Register and prime the voices uploaded in earlier runs (a file that no longer loads is skipped)."""
        names = await asyncio.to_thread(self.voice_folder.names)
        for name in names:
            if name in self.voices:
                logger.warning("uploaded voice %r is shadowed by a configured voice of that name", name)
                continue
            try:
                await self.add_voice(name, self.voice_folder.path(name))
            except SpeechError as exc:
                logger.warning("skipping uploaded voice %r: %s", name, exc.message)

    async def add_voice(self, name: str, path: Path) -> None:
        """Prime ``path`` on the inference worker, then register it as ``name`` (usable by every endpoint).

        The voice becomes visible only once primed, so no response ever sees it half-loaded.

        Raises:
            SpeechError: the prompt could not be loaded (code ``voice_load_failed``).
        """
        try:
            state = await self._worker.run(_voice_loader(path))
        except Exception as exc:
            raise SpeechError("voice_load_failed", f"Voice {name!r} could not be loaded: {exc}") from exc
        self.voices.add(name, path)
        self.voices.set_loaded(name, state)
        self.uploaded_voices.add(name)
        logger.info("voice %r added from %s", name, path)

    def remove_voice(self, name: str) -> None:
        """Unregister an uploaded voice (its file is the caller's to delete).

        Raises:
            UnknownVoice: not registered. SpeechError: it is the default voice.
        """
        self.voices.remove(name)
        self.uploaded_voices.discard(name)

    async def warm_up(self) -> None:
        """Decode throw-away streams so lazy initialisation happens before the first client; measure the memory
        one stream holds (the decoder stream cap is sized from it when automatic) and the decoder's cost per
        step, alone and batched, so admission knows the real-time capacity before the first answer."""
        voice = self.voices.loaded(self.voices.default)

        def job(engine: SpeechEngine) -> int:
            timing = engine.timing
            stream = engine.start(voice)
            engine.push(stream, list(range(timing.first_hop_codes + timing.lookahead_codes)))
            held = engine.state_bytes(stream)
            engine.finish(stream)
            return held

        self.stream_bytes = await self._worker.run(job)
        self.decoder_streams.limit = self._stream_limit()
        await self._measure_capacity(voice)
        capacity = self._worker.capacity(self.config.worker_batch, self.sample_rate)
        logger.info(
            "one decoder stream holds %.1f MB: at most %d live streams; decoder capacity %s audio s/s",
            self.stream_bytes / BYTES_PER_MB,
            self.decoder_streams.limit,
            "unmeasured" if capacity is None else f"{capacity:.1f}",
        )

    async def _measure_capacity(self, voice: EngineVoice) -> None:
        """Run steady decode steps through the worker's scheduler, one stream and then several at once, so its
        cost model (and so admission) starts from measured figures; they keep updating from real batches."""
        timing = await self._worker.run(lambda engine: engine.timing)
        width = min(WARM_UP_STREAMS, self.config.worker_batch)
        streams = [await self._worker.run(lambda engine: engine.start(voice)) for _ in range(width)]
        group = self._worker.group("warm-up")
        codes = tuple(range(timing.first_hop_codes + timing.lookahead_codes))
        steady = tuple(range(timing.steady_hop_codes))

        async def step(stream: object, batch: tuple[int, ...] | None, index: int) -> None:
            request = StepRequest(stream, batch or (), finish=batch is None)
            await self._worker.run_step(request, deadline=float(index), has_audio=True, group=group)

        for stream in streams:  # the first windows, one stream at a time (cost at batch 1)
            await step(stream, codes, 0)
        for round_index in range(WARM_UP_ROUNDS):  # steady windows of every stream at once (batched)
            await asyncio.gather(*(step(s, steady, round_index) for s in streams))
        await asyncio.gather(*(step(s, None, WARM_UP_ROUNDS) for s in streams))

    def reply(
        self, request: GenerationInput, *, voice: str, meter: UsageMeter | None = None
    ) -> AsyncIterator[PipelineEvent]:
        """Stream one reply (see `realtime.speech.pipeline.stream_reply`); a `ReplyProducer`.

        Every failure surfaces while iterating (never from this call): an unknown voice raises
        `SpeechError` (code ``unknown_voice``) on the first ``__anext__``. Closing the iterator or cancelling
        the task that iterates it aborts the LLM request and drops pending decode steps.

        Args:
            request: the generation input (``request.rid`` is the abort handle).
            voice: a registered voice name, or an OpenAI name (spoken by the default voice).
            meter: filled with token counts as they arrive (usage of a response that gets cancelled).
        """
        voice = self.voices.speaker(voice)
        if voice not in self.voices:
            return _raise(self.voices.check, voice)
        if self._closed:
            return _raise(_closed_error)
        state = self.voices.loaded(voice)
        speech = SpeechSetup(
            self._worker,
            state,
            self.sample_rate,
            admission=self.decoder_streams,
            hold_load=self.config.first_chunk_hold_load,
        )
        return stream_reply(self.backend, speech, request, self.metrics, meter)

    async def readiness(self) -> list[str]:
        """Why this replica should not get new sessions now; empty when it should.

        Not ready while the decoder is not running, while draining, or while the LLM backend does not answer
        its probe (`LLMBackend.check_reachable`, at most one network probe a second).
        """
        reasons: list[str] = []
        if self._closed or not self._worker.running:
            reasons.append("decoder: not running")
        if self.draining:
            reasons.append("draining: shutting down")
        gate = self.decoder_streams
        if gate.saturated:
            reasons.append(
                f"decoder: saturated ({gate.live} answers speaking, {gate.waiting} waiting for the decoder)"
            )
        try:
            await self.backend.check_reachable()
        except BackendError as exc:
            reasons.append(f"backend: {exc.message}")
        return reasons

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for ``/health``: backend, decoder, voices, and the embedded-demo notice.

        Readiness is not here: ``/health`` and ``/health/ready`` both take it from `readiness` (plus the session
        cap), so the two never disagree.
        """
        running = not self._closed and self._worker.running
        info: dict[str, Any] = {
            "status": "ok" if running else "stopping",
            "backend": self.backend.name,
            "decoder": self.decoder,
            "device": self.config.device,
            "dtype": self.config.dtype,
            "torch_threads": self.config.effective_torch_threads,
            "sample_rate": self.sample_rate,
            "first_hop_tokens": self.config.first_hop_tokens,
            "hop_tokens": self.config.hop_tokens,
            "voices": self.voices.names(),
            "default_voice": self.voices.default,
            "active_sessions": self.metrics.active_sessions,
            "decoder_streams": {
                "live": self.decoder_streams.live,
                "limit": self.decoder_streams.limit,
                "waiting": self.decoder_streams.waiting,
                "stream_bytes": self.stream_bytes,
                "capacity_audio_s_per_s": self.decoder_streams.capacity_now(),
                "admitted": self.decoder_streams.admitted,
                "refused": self.decoder_streams.refused,
            },
            "transcriptions": {"live": self.transcriptions.live, "limit": self.transcriptions.limit},
            "embedded_demo": self.is_embedded_demo,
        }
        if self.is_embedded_demo:
            info["notice"] = DEMO_NOTICE
        return info

    async def aclose(self) -> None:
        """Stop the worker and close the backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.backend.aclose()
        finally:
            await self._worker.aclose()


async def _raise(check: Callable[..., None], *args: str) -> AsyncIterator[PipelineEvent]:
    check(*args)
    raise AssertionError("unreachable: the check raises")  # pragma: no cover
    yield  # makes this an async generator


def _voice_loader(path: Path) -> Callable[[SpeechEngine], EngineVoice]:
    def load(engine: SpeechEngine) -> EngineVoice:
        return engine.load_voice(path)

    return load


def _closed_error() -> None:
    raise SpeechError("worker_closed", "The server is shutting down.")


async def ensure_embedded_token2wav(config: ServerConfig) -> Path:
    """The tiny random-weight Token2Wav for the embedded demo, generated into the cache on first start."""
    target = config.embedded_token2wav_dir
    if (target / _COMPLETE_MARKER).is_file():
        return target
    logger.info("first start: writing a tiny random-weight Token2Wav to %s", target)
    await asyncio.to_thread(_make_embedded, target)
    return target


def _make_embedded(target: Path) -> None:
    from token2wav.dummy import make_dummy_model_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    # build next to the target and rename, so a crash or a second process never sees a half-written model
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        make_dummy_model_dir(scratch, EMBEDDED_MODEL_SIZE, seed=EMBEDDED_MODEL_SEED)
        (scratch / _COMPLETE_MARKER).write_text("complete\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)
    except OSError:
        if not (target / _COMPLETE_MARKER).is_file():  # unless another process won the race and finished
            raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
