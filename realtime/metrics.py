"""Prometheus metrics of one server (one registry per app, never the process-global one).

Thread-safety: prometheus-client metrics are thread-safe; every method here may be called from the event loop
or the worker thread.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

METRIC_PREFIX = "streamvoice"
# Time to first audio: bucket edges in seconds around the 0.2-1.5 s range the design targets.
TTFA_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Real-time factor = decode seconds / audio seconds per Token2Wav chunk; < 1 keeps up with playback.
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
# Server overhead per chunk (worker -> event loop -> session), in seconds: should stay in the sub-ms range.
# Decode steps the inference worker hands to one batched Token2Wav call.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
# Seconds a spoken answer waited for decoder admission (0 when admitted at once); bounded by --decoder-wait.
QUEUE_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class DecoderFigures(Protocol):
    """What the decoder's admission gate shows (realtime/speech/admission.py `DecoderAdmission`)."""

    @property
    def live(self) -> int: ...

    @property
    def limit(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def capacity_now(self) -> float | None: ...


class Metrics:
    """The server's counters, gauges and histograms on a private `CollectorRegistry`.

    Attributes:
        registry: the registry `/metrics` renders.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        p = METRIC_PREFIX
        self._active_sessions = Gauge(
            f"{p}_active_sessions", "Open WebSocket sessions", registry=self.registry
        )
        self._sessions = Counter(f"{p}_sessions", "WebSocket sessions accepted", registry=self.registry)
        self._responses = Counter(
            f"{p}_responses", "Responses finished, by final status", ["status"], registry=self.registry
        )
        self._active_responses = Gauge(
            f"{p}_active_responses", "Responses currently generating", registry=self.registry
        )
        self._cancels = Counter(
            f"{p}_response_cancels", "Responses cancelled, by reason", ["reason"], registry=self.registry
        )
        self._errors = Counter(f"{p}_errors", "Errors, by code", ["code"], registry=self.registry)
        self._unused_content = Counter(
            f"{p}_unused_content_parts",
            "Content parts accepted and stored but left out of the prompt (the model cannot use them), by type "
            "and door",
            ["kind", "door"],
            registry=self.registry,
        )
        self._ttfa = Histogram(
            f"{p}_time_to_first_audio_seconds",
            "Time from response start to the first decoded audio chunk",
            buckets=TTFA_BUCKETS,
            registry=self.registry,
        )
        self._rtf = Histogram(
            f"{p}_token2wav_real_time_factor",
            "Token2Wav decode time divided by the audio duration it produced, per step",
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )
        self._overhead = Histogram(
            f"{p}_audio_chunk_overhead_seconds",
            "Time from decoded PCM ready on the worker to the audio chunk handed to the session",
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self._delta_send = Histogram(
            f"{p}_audio_delta_send_seconds",
            "Time from a decoded chunk reaching the session to each of its delta frames written to the socket",
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self._ttft = Histogram(
            f"{p}_time_to_first_transcript_seconds",
            "Time from response start to its first transcript (or text) delta queued for the client",
            buckets=TTFA_BUCKETS,
            registry=self.registry,
        )
        self._audio_seconds = Counter(
            f"{p}_output_audio_seconds", "Seconds of audio generated", registry=self.registry
        )
        self._output_tokens = Counter(f"{p}_output_tokens", "LLM tokens generated", registry=self.registry)
        self._open_connections = Gauge(
            f"{p}_open_connections",
            "TCP connections counted against --max-connections (every door)",
            registry=self.registry,
        )
        self._connections_refused = Counter(
            f"{p}_connections_refused",
            "Connections refused or closed by the connection limits, by reason (per_address, full, "
            "reserve_full, gate_timeout, header_timeout, evicted, body_timeout)",
            ["reason"],
            registry=self.registry,
        )
        self._accept_errors = Counter(
            f"{p}_accept_errors",
            "accept() calls that failed (too many open files...); logged once per interval",
            registry=self.registry,
        )
        self._transport_errors = Counter(
            f"{p}_transport_errors",
            "Client transport faults the server logs in one line, by kind (invalid_utf8: a WebSocket text "
            "frame that is not UTF-8, closed 1007)",
            ["kind"],
            registry=self.registry,
        )
        self._waiting = Gauge(
            f"{p}_admission_waiting",
            "Requests waiting for a slot, by what they wait for (transcription, body_memory)",
            ["resource"],
            registry=self.registry,
        )
        self._batch = Histogram(
            f"{p}_token2wav_batch_size",
            "Decode steps (one per stream) run together in one batched Token2Wav call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

        self._decoder_queue = Histogram(
            f"{p}_decoder_queue_seconds",
            "Seconds a spoken answer (any door) waited for decoder admission before it started",
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self._decoder_refused = Counter(
            f"{p}_decoder_refusals",
            "Spoken answers refused with decoder_capacity_reached (any door)",
            registry=self.registry,
        )
        self._first_chunks_held = Counter(
            f"{p}_first_chunks_held",
            "Answers whose first chunk was held until the second was decoded (a loaded decoder, "
            "--first-chunk-hold-load)",
            registry=self.registry,
        )
        self._decoder_live = Gauge(
            f"{p}_decoder_streams",
            "Spoken answers holding a decoder stream (the load, audio s/s)",
            registry=self.registry,
        )
        self._decoder_limit = Gauge(
            f"{p}_decoder_stream_limit", "Decoder streams allowed by memory", registry=self.registry
        )
        self._decoder_capacity = Gauge(
            f"{p}_decoder_capacity_audio_seconds_per_second",
            "Audio seconds per wall second the decoder serves at its current load (measured; 0 before)",
            registry=self.registry,
        )

    def watch_decoder(self, figures: DecoderFigures) -> None:
        """Read the decoder gauges (streams live, limit, capacity) from ``figures`` at every scrape."""
        self._decoder_live.set_function(lambda: figures.live)
        self._decoder_limit.set_function(lambda: figures.limit)
        self._decoder_capacity.set_function(lambda: figures.capacity_now() or 0.0)

    def observe_decoder_queue(self, seconds: float) -> None:
        """A spoken answer was admitted after waiting ``seconds``."""
        self._decoder_queue.observe(seconds)

    def decoder_refused(self) -> None:
        """A spoken answer was refused (decoder_capacity_reached)."""
        self._decoder_refused.inc()

    def first_chunk_held(self) -> None:
        """A reply's first chunk was held until its second (realtime/speech/decoder.py)."""
        self._first_chunks_held.inc()

    # sessions (called by the app / session layer)
    def session_opened(self) -> None:
        """A WebSocket session was accepted."""
        self._sessions.inc()
        self._active_sessions.inc()

    def session_closed(self) -> None:
        """A WebSocket session ended (any reason)."""
        self._active_sessions.dec()

    @property
    def active_sessions(self) -> int:
        """Open sessions right now."""
        return int(self._active_sessions._value.get())

    # connections (called by realtime.http.connections, realtime.http.capacity, realtime.http.log_filters)
    def set_open_connections(self, count: int) -> None:
        """``count`` connections are open now."""
        self._open_connections.set(count)

    def connection_refused(self, reason: str) -> None:
        """A connection was refused, or closed by a limit, for ``reason``."""
        self._connections_refused.labels(reason=reason).inc()

    def accept_error(self) -> None:
        """One accept() failed."""
        self._accept_errors.inc()

    def transport_error(self, kind: str) -> None:
        """A client transport fault of ``kind`` was logged."""
        self._transport_errors.labels(kind=kind).inc()

    def admission_waiting(self, resource: str, delta: int) -> None:
        """``delta`` more (or fewer) requests wait for ``resource``."""
        self._waiting.labels(resource=resource).inc(delta)

    # responses
    def response_started(self) -> None:
        """A response began generating."""
        self._active_responses.inc()

    def response_finished(self, status: str) -> None:
        """A response ended with a Realtime status (completed, incomplete, cancelled, failed)."""
        self._active_responses.dec()
        self._responses.labels(status=status).inc()

    def response_cancelled(self, reason: str) -> None:
        """A response was cancelled (``client_cancelled``, ``turn_detected``, ``disconnected``...)."""
        self._cancels.labels(reason=reason).inc()

    def error(self, code: str | None) -> None:
        """An error event was sent or a response failed with ``code`` (``none`` when OpenAI's code is null)."""
        self._errors.labels(code=code or "none").inc()

    def unused_content(self, kind: str, door: str, count: int = 1) -> None:
        """``count`` parts of ``kind`` (``input_image``, ``image_url``, ``file``) were accepted through ``door``
        (``realtime``, ``chat``) but cannot reach the model."""
        self._unused_content.labels(kind=kind, door=door).inc(count)

    # pipeline (called by realtime.speech.pipeline)
    def observe_time_to_first_audio(self, seconds: float) -> None:
        """Seconds from response start to its first decoded audio chunk."""
        self._ttfa.observe(seconds)

    def observe_decode(self, decode_seconds: float, audio_seconds: float) -> None:
        """One Token2Wav step took ``decode_seconds`` and produced ``audio_seconds`` of audio."""
        if audio_seconds > 0:
            self._rtf.observe(decode_seconds / audio_seconds)
            self._audio_seconds.inc(audio_seconds)

    def observe_batch(self, steps: int) -> None:
        """The inference worker ran ``steps`` decode steps as one batch (called on the worker thread)."""
        self._batch.observe(steps)

    def observe_chunk_overhead(self, seconds: float) -> None:
        """Seconds from a chunk's PCM being ready on the worker to the pipeline handing it to the session."""
        self._overhead.observe(seconds)

    def observe_delta_overhead(self, seconds: float) -> None:
        """Seconds from a decoded chunk reaching the session to one of its delta frames written to the socket."""
        self._delta_send.observe(seconds)

    def observe_time_to_first_transcript(self, seconds: float) -> None:
        """Seconds from response start to its first transcript or text delta (called by the session layer)."""
        self._ttft.observe(seconds)

    def observe_output_tokens(self, count: int) -> None:
        """``count`` LLM tokens were generated."""
        if count > 0:
            self._output_tokens.inc(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
