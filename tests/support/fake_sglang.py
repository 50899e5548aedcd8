"""A fake SGLang server that speaks SGLang 0.5.23's native wire format (docs/SGLANG.md §6.2-§6.4, §8).

Written from the spec, not from our client, so it can be diffed against the real server (issue 9 runs the
same client tests against SGLang on CPU). What it reproduces:

- ``GET /model_info`` and the deprecated ``GET /get_model_info``; the context length in ``GET /v1/models``
  (``max_model_len``) and ``GET /server_info`` (``context_length``, ``max_req_input_len`` = context - 6).
- The context-length checks, with SGLang's texts: a prompt (audio patches expanded) of at least the context
  length, or prompt + ``max_new_tokens`` above it, is refused with HTTP 400 before anything is generated; a
  prompt of at least ``max_req_input_len`` is accepted and then aborted by the "scheduler".
- ``GET /model_info`` and the deprecated ``GET /get_model_info``; ``GET /health`` (200: SGLang's answers after
  generating one token, which a fake need not do).
- ``meta_info.cached_tokens``: the longest prefix a prompt shares with an earlier generation's ids (its radix
  cache).
- ``POST /generate`` with ``input_ids`` (the ``--skip-tokenizer-init`` shape: chunks carry no ``text``),
  ``stream`` true or false, the sampling-params contract (unknown keys -> HTTP 400 ``{"error": ...}``), the
  ``max_new_tokens`` default of 128, ``stop_token_ids`` (the matched id stays in ``output_ids``), and
  ``stream_interval`` (server-wide, overridable per request).
- Both output modes: cumulative ``output_ids`` (default) and deltas (``--incremental-streaming-output``);
  ``meta_info.completion_tokens`` is always the running total.
- SSE framing: ``data: <compact JSON>\\n\\n`` chunks, always ending with ``data: [DONE]\\n\\n``; a ValueError
  mid-stream (e.g. a duplicate in-flight ``rid``) becomes ``data: {"error": {...}}`` and then ``[DONE]``.
- ``POST /abort_request {"rid"}``: the stream ends with ``finish_reason {"type": "abort"}``; unknown rids are
  a no-op with HTTP 200. Arrival times are recorded (``time.monotonic``) for latency assertions.
- Step-Audio-2 audio placeholders: each ``<audio_start><audio_patch><audio_end>`` is expanded by the patch
  count of its ``audio_data`` WAV (``audio_mode="expand"``, the plugin), or left alone (``"drop"``, upstream
  SGLang without the model, which accepts the request silently).
- Faults: a slow mode (delay per token), a stream cut without ``[DONE]``, HTTP 500, an error chunk, a
  server-side abort, a stream that ends without a finish reason.

Run it in a background thread with `FakeSGLangServer` (real HTTP on 127.0.0.1, free port).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streaming_parser import VocabLayout

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default when a request leaves it out (docs/SGLANG.md §6.2)
DEFAULT_CONTEXT_LENGTH = 4096  # the tiny test checkpoint's max_position_embeddings
SCHEDULER_INPUT_MARGIN = 6  # max_req_input_len = min(context_len - 1, kv_capacity - 1) - 5
SAMPLING_KEYS = frozenset(
    {
        "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k", "min_p",
        "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n", "json_schema",
        "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
        "no_stop_trim", "stream_interval", "logit_bias", "sampling_seed", "custom_params",
    }
)  # fmt: skip

Fault = Literal["none", "cut", "http_500", "error_chunk", "server_abort", "no_finish"]
AudioMode = Literal["expand", "drop"]


def step_audio2_patches(num_samples: int) -> int:
    """Placeholder expansion of one 16 kHz clip, from the spec: T = (L + 479) // 160 mel frames,
    enc = (T + 1) // 2 // 2, patches = (enc - 1) // 2 + 1."""
    frames = (num_samples + 479) // 160
    enc = (frames + 1) // 2 // 2
    return (enc - 1) // 2 + 1


def wav_samples(data_uri: str) -> int:
    """Sample count of a ``data:audio/wav;base64,...`` URI (16 kHz mono PCM16 expected)."""
    raw = base64.b64decode(data_uri.split(",", 1)[1], validate=True)
    with wave.open(io.BytesIO(raw)) as reader:
        if reader.getframerate() != 16_000 or reader.getnchannels() != 1:
            raise ValueError("the fake expects 16 kHz mono WAV")
        return int(reader.getnframes())


@dataclass
class FakeSGLangState:
    """Behaviour switches (set before or between requests) and what the server saw.

    Attributes:
        script: request body -> the ids the "model" would sample, in order.
        incremental: deltas instead of cumulative ids (``--incremental-streaming-output``).
        stream_interval: tokens per chunk (``--stream-interval``).
        token_delay_s: sleep before each sampled token (the slow mode).
        fault: injected failure; ``fault_after`` chunks are sent first.
        audio_mode: whether audio placeholders are expanded (model plugin present) or dropped.
        model_info: the ``/model_info`` body.
        legacy_model_info_only: answer 404 on ``/model_info`` so clients must fall back to the old path.
        context_length: the model's context length (reported and enforced).
        requests: every ``/generate`` body received.
        aborts: (rid, monotonic arrival time) of every ``/abort_request``.
        disconnects: (rid, monotonic time) when a client dropped a stream before it ended.
        client_ports: client TCP port of each ``/generate`` (connection reuse shows as repeated ports).
        cached: the id sequences (prompt + output) of earlier generations: a stand-in for SGLang's radix
            cache, from which ``meta_info.cached_tokens`` is the longest shared prefix of a new prompt's ids.
    """

    script: Callable[[dict[str, Any]], Sequence[int]] = lambda body: []
    incremental: bool = False
    stream_interval: int = 1
    token_delay_s: float = 0.0
    fault: Fault = "none"
    fault_after: int = 1
    audio_mode: AudioMode = "expand"
    legacy_model_info_only: bool = False  # only /get_model_info, as SGLang before /model_info existed
    context_length: int = DEFAULT_CONTEXT_LENGTH
    layout: VocabLayout = field(default_factory=VocabLayout.default)
    model_info: dict[str, Any] = field(
        default_factory=lambda: {
            "model_path": "/models/Step-Audio-2-mini",
            "served_model_name": "/models/Step-Audio-2-mini",
            "tokenizer_path": "/models/Step-Audio-2-mini",
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "has_image_understanding": False,
            "has_audio_understanding": True,
            "model_type": "step_audio_2",
            "architectures": ["StepAudio2ForCausalLM"],
        }
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    aborts: list[tuple[str, float]] = field(default_factory=list)
    disconnects: list[tuple[str, float]] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    cached: list[tuple[int, ...]] = field(default_factory=list)

    def cached_prefix(self, ids: Sequence[int]) -> int:
        """Longest prefix of ``ids`` that an earlier generation's ids share (0 when none)."""
        best = 0
        for seen in self.cached:
            shared = 0
            for a, b in zip(ids, seen, strict=False):
                if a != b:
                    break
                shared += 1
            best = max(best, shared)
        return best

    in_flight: dict[str, asyncio.Event] = field(default_factory=dict)


def create_fake_sglang_app(state: FakeSGLangState) -> Starlette:
    """The Starlette app; all handlers run on the server's event loop."""

    async def model_info(request: Request) -> Response:
        if state.legacy_model_info_only and request.url.path == "/model_info":
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse(state.model_info)

    async def models(request: Request) -> Response:
        name = state.model_info["served_model_name"]
        card = {"id": name, "object": "model", "owned_by": "sglang", "root": name}
        return JSONResponse({"object": "list", "data": [{**card, "max_model_len": state.context_length}]})

    async def server_info(request: Request) -> Response:
        return JSONResponse(
            {
                "context_length": None,  # a resolved server arg: None unless --context-length was given
                "max_total_num_tokens": 8192,
                "max_req_input_len": state.context_length - SCHEDULER_INPUT_MARGIN,
                "version": "0.5.23",
            }
        )

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def abort_request(request: Request) -> Response:
        body = await request.json()
        rid = str(body.get("rid", ""))
        state.aborts.append((rid, time.monotonic()))
        event = state.in_flight.get(rid)
        if event is not None:
            event.set()
        return Response(status_code=200)

    async def generate(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        if request.client is not None:
            state.client_ports.append(request.client.port)
        error = _contract_error(body)
        if error is not None:
            return JSONResponse({"error": error}, status_code=400)
        if state.fault == "http_500":
            return JSONResponse({"error": {"message": "injected internal error"}}, status_code=500)
        try:
            prompt_tokens = _prompt_tokens(body, state)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        refusal = _context_error(body, prompt_tokens, state.context_length)
        if refusal is not None:
            error = {"message": refusal, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse({"error": error}, status_code=400)
        run = _Generation(state, body, prompt_tokens)
        if not body.get("stream", False):
            chunks = [chunk async for chunk in run.chunks()]
            return JSONResponse(chunks[-1] if chunks else {})
        return StreamingResponse(run.sse(), media_type="text/event-stream")

    routes = [
        Route("/model_info", model_info, methods=["GET"]),
        Route("/get_model_info", model_info, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/server_info", server_info, methods=["GET"]),
        Route("/get_server_info", server_info, methods=["GET"]),
        Route("/abort_request", abort_request, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/generate", generate, methods=["POST", "PUT"]),
    ]
    return Starlette(routes=routes)


def _contract_error(body: dict[str, Any]) -> str | None:
    if "input_ids" not in body and "text" not in body:
        return "Either text or input_ids should be provided."
    sampling = body.get("sampling_params") or {}
    unknown = sorted(set(sampling) - SAMPLING_KEYS)
    if unknown:
        return f"unknown field `{unknown[0]}`"
    return None


def _context_error(body: dict[str, Any], prompt_tokens: int, context: int) -> str | None:
    """SGLang 0.5.23's tokenizer-manager checks (``_validate_one_request``), with its exact messages."""
    if prompt_tokens >= context:
        return f"The input ({prompt_tokens} tokens) is longer than the model's context length ({context} tokens)."
    max_new = (body.get("sampling_params") or {}).get("max_new_tokens")
    if max_new is not None and max_new + prompt_tokens > context:
        return (
            "Requested token count exceeds the model's maximum context length "
            f"of {context} tokens. You requested a total of {max_new + prompt_tokens} "
            f"tokens: {prompt_tokens} tokens from the input messages and "
            f"{max_new} tokens for the completion. Please reduce the number "
            "of tokens in the input messages or the completion to fit within the limit."
        )
    return None


def _prompt_tokens(body: dict[str, Any], state: FakeSGLangState) -> int:
    ids: list[int] = list(body.get("input_ids") or [])
    audio = body.get("audio_data") or []
    audio = [audio] if isinstance(audio, str) else list(audio)
    if state.audio_mode == "drop":
        return len(ids)
    layout = state.layout
    placeholders = sum(
        1
        for i in range(len(ids) - 2)
        if ids[i : i + 3] == [layout.audio_start, layout.audio_patch, layout.audio_end]
    )
    if placeholders != len(audio):
        raise ValueError(f"{placeholders} audio placeholders but {len(audio)} audio_data items")
    return len(ids) + sum(step_audio2_patches(wav_samples(item)) - 1 for item in audio)


class _Generation:
    """One request's token loop: sampling, stop/length, chunking, abort and faults."""

    def __init__(self, state: FakeSGLangState, body: dict[str, Any], prompt_tokens: int) -> None:
        self.state = state
        self.rid = str(body.get("rid") or f"fake-{len(state.requests)}")
        sampling = body.get("sampling_params") or {}
        self.max_new = int(sampling.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        self.stop_ids = set(sampling.get("stop_token_ids") or [])
        self.interval = int(sampling.get("stream_interval") or state.stream_interval)
        self.script = list(state.script(body))
        self.prompt_tokens = prompt_tokens
        self.input_ids: list[int] = list(body.get("input_ids") or [])
        self.cached_tokens = state.cached_prefix(self.input_ids)
        self.finished = False
        self.truncated = False  # the no_finish fault ended the stream early on purpose

    async def sse(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks():
                yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        except ValueError as exc:
            error = {"message": str(exc), "type": "invalid_request_error", "code": 400, "retryable": False}
            yield b"data: " + json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n\n"
        except _Cut:
            raise RuntimeError("injected stream cut") from None  # uvicorn drops the connection mid-body
        finally:
            if not self.finished and not self.truncated:  # the client went away mid-stream
                self.state.disconnects.append((self.rid, time.monotonic()))
        yield b"data: [DONE]\n\n"

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        state = self.state
        if self.rid in state.in_flight:
            raise ValueError(f"Duplicate request ID detected: {self.rid}")
        aborted = asyncio.Event()
        state.in_flight[self.rid] = aborted
        try:
            admitted = state.context_length - SCHEDULER_INPUT_MARGIN
            if self.prompt_tokens >= admitted:  # the scheduler's validate_input_length
                message = (
                    f"Input length ({self.prompt_tokens} tokens) exceeds the maximum allowed length "
                    f"({admitted} tokens). Use a shorter input or enable --allow-auto-truncate."
                )
                finish = {"type": "abort", "message": message, "status_code": 400, "err_type": None}
                self.finished = True
                yield self._chunk([], 0, finish)
                return
            output: list[int] = []
            sent = 0
            chunks_sent = 0
            finish: dict[str, Any] | None = None
            while finish is None:
                if await _wait(aborted, state.token_delay_s):
                    finish = {"type": "abort", "message": "Abort before prefill", "status_code": 200}
                    finish["err_type"] = None
                elif state.fault == "server_abort" and chunks_sent >= state.fault_after:
                    finish = {"type": "abort", "message": "injected server abort", "status_code": 500}
                    finish["err_type"] = "internal"
                else:
                    token = self.script[len(output)] if len(output) < len(self.script) else 0
                    output.append(token)
                    if token in self.stop_ids:
                        finish = {"type": "stop", "matched": token}
                    elif len(output) >= self.max_new:
                        finish = {"type": "length", "length": len(output)}
                if finish is None and len(output) - sent < self.interval:
                    continue
                if finish is None and self._fault_now(chunks_sent):
                    self.truncated = True
                    return
                yield self._chunk(output, sent, finish)
                sent = len(output)
                chunks_sent += 1
            self.finished = True
        finally:
            state.in_flight.pop(self.rid, None)
            state.cached.append((*self.input_ids, *output))

    def _fault_now(self, chunks_sent: int) -> bool:
        fault = self.state.fault
        if chunks_sent < self.state.fault_after:
            return False
        if fault == "cut":
            raise _Cut
        if fault == "error_chunk":
            raise ValueError("injected error chunk")
        return fault == "no_finish"

    def _chunk(self, output: list[int], sent: int, finish: dict[str, Any] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.rid,
            "finish_reason": finish,
            "prompt_tokens": self.prompt_tokens,
            "weight_version": "default",
            "num_retractions": 0,
            "reasoning_tokens": 0,
            "completion_tokens": len(output),
            "cached_tokens": self.cached_tokens,
        }
        if finish is not None:
            meta["e2e_latency"] = 0.0
        ids = output[sent:] if self.state.incremental else list(output)
        return {"output_ids": ids, "meta_info": meta}


class _Cut(Exception):
    """Injected connection drop."""


async def _wait(event: asyncio.Event, delay_s: float) -> bool:
    """Sleep ``delay_s`` (yielding to the loop even at 0); True as soon as ``event`` is set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout=delay_s)
    except TimeoutError:
        return False
    return True


class FakeSGLangServer:
    """Runs the fake on 127.0.0.1 (free port) in a background thread with its own event loop.

    Use as a context manager; ``url`` is the base URL. ``state`` may be changed between requests.
    """

    def __init__(self, state: FakeSGLangState | None = None) -> None:
        self.state = state or FakeSGLangState()
        config = uvicorn.Config(
            create_fake_sglang_app(self.state), host="127.0.0.1", port=0, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-sglang", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeSGLangServer:
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake SGLang server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
