"""LLM backend over a running SGLang server's native ``/generate`` stream (docs/SGLANG.md §6.2-§6.4).

One `httpx.AsyncClient` (one connection pool) serves every session. Each generation is one streamed
``POST /generate`` carrying our own ``rid``, the prompt as ``input_ids`` and user speech as ``audio_data``.
Cancelling (closing the iterator, or task cancellation) sends ``POST /abort_request {"rid"}`` at once and
closes the stream: SGLang's own abort-on-disconnect only fires two seconds later.

The URL may be an SGLang Model Gateway (``smg``) in front of several workers (docs/DEPLOY.md): every
``/generate`` then carries the session's affinity key in the gateway's routing-key header, so a session's turns
reach the worker that holds their prefix, and aborts go to the workers themselves (`AbortDelivery`).

Failures of one generation are `BackendError`s with a stable ``code`` (``connection_refused``, ``timeout``,
``http_<status>``, ``stream_cut``, ``server_error``, ``protocol_error``, ``audio_dropped``,
``aborted_by_server``, ``duplicate_request_id``, and ``context_length_exceeded`` when SGLang refuses the length
of a request: `realtime.backends.sglang.stream.sglang_error`); the response fails, the session and the backend
stay usable. `start` learns the context length (``/v1/models``, ``/server_info``).

Size: just over 400 lines: one backend class (start-up checks, streaming, aborts, context discovery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from realtime.backends.base import BackendError, FinishReason, GenerationInput, TokenChunk, answer_budget
from realtime.backends.sglang.abort import AbortDelivery, AbortRoute
from realtime.backends.sglang.stream import (
    SSE_DONE,
    ChunkDecoder,
    ServerSampling,
    StreamMode,
    error_message,
    parse_chunk_json,
    sampling_payload,
    server_abort_error,
    sglang_error,
    sse_payload,
)
from realtime.backends.sglang.vocab import ModelVocab, ModelVocabBackend, load_model_vocab, model_matches

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Longest silence between two chunks: covers prefill of a long prompt on a busy server.
DEFAULT_READ_TIMEOUT_S = 60.0
ABORT_TIMEOUT_S = 2.0
KEEPALIVE_CONNECTIONS = 32  # idle connections kept for reuse; in-flight streams are not capped
MODEL_INFO_PATHS = ("/model_info", "/get_model_info")  # 0.5.23 name first, the deprecated alias second
SERVER_INFO_PATHS = ("/server_info", "/get_server_info")
MODELS_PATH = "/v1/models"  # OpenAI-compatible; ``max_model_len`` is the model config's context length
HTTP_ERROR_FIRST = 400
HTTP_NOT_FOUND = 404
ERROR_BODY_LIMIT = 300
DEFAULT_AFFINITY_HEADER = "x-smg-routing-key"  # smg's default --routing-key-headers
ROUTED_WORKER_HEADER = "x-smg-routed-worker-id"  # smg names the worker it sent a request to (its URL)
SGLANG_HEALTH_PATH = "/health"  # SGLang: the server and its scheduler answer
GATEWAY_READY_PATH = "/readiness"  # smg: 200 while at least one worker is healthy
PROBE_TIMEOUT_S = 4.0
PROBE_CACHE_S = 1.0  # load balancers probe often: reuse one answer for this long


@dataclass(frozen=True)
class SGLangHTTPConfig:
    """Where SGLang runs and how we talk to it.

    Attributes:
        url: base URL of the SGLang server, e.g. ``http://127.0.0.1:30000``.
        model_dir: local model folder with ``tokenizer.json`` (prompt ids, transcript detokenisation, vocab
            layout). ``None``: use the server's ``tokenizer_path`` when it is a local folder.
        expected_model: model path or name the server must report; ``None`` skips the check.
        api_key: bearer token for ``--api-key`` servers.
        admin_api_key: bearer token for ``/abort_request`` on ``--admin-api-key`` servers (falls back to
            ``api_key``).
        connect_timeout_s: TCP connect limit.
        read_timeout_s: longest wait for the next chunk.
        check_audio: compare the reported prompt length with the expected audio expansion.
        sampling: server-wide sampling overrides.
        context_length: use this context length instead of the one the server reports (it may only be
            smaller: SGLang refuses longer requests).
        worker_urls: past a gateway that does not route ``/abort_request``, the SGLang workers to send aborts
            to; empty: read them from the gateway's ``GET /workers``.
        affinity_header: request header that carries `GenerationInput.affinity_key` (a gateway routes equal
            keys to the same worker); empty: send none.
    """

    url: str
    model_dir: Path | None = None
    expected_model: str | None = None
    api_key: str | None = None
    admin_api_key: str | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    check_audio: bool = True
    sampling: ServerSampling = field(default_factory=ServerSampling)
    context_length: int | None = None
    worker_urls: tuple[str, ...] = ()
    affinity_header: str = DEFAULT_AFFINITY_HEADER


class SGLangHTTPBackend(ModelVocabBackend):
    """`realtime.backends.base.LLMBackend` over SGLang's HTTP API. Use from one event loop.

    Args:
        config: server address and options.
        vocab: tokenizer and layout to use instead of loading ``config.model_dir`` (tests).
        transport: httpx transport override (tests).
    """

    def __init__(
        self,
        config: SGLangHTTPConfig,
        *,
        vocab: ModelVocab | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        if vocab is not None:
            self._use_vocab(vocab)
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.read_timeout_s,
            pool=config.connect_timeout_s,
        )
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=KEEPALIVE_CONNECTIONS),
            transport=transport,
        )
        self._active: set[str] = set()
        self._aborted: set[str] = set()
        self._routed: dict[str, str] = {}  # rid -> the worker a gateway says runs it (active rids only)
        self._abort_tasks: set[asyncio.Task[None]] = set()
        self._aborts = AbortDelivery(self._client, config.worker_urls, ABORT_TIMEOUT_S)
        self._probe: tuple[float, BackendError | None] = (float("-inf"), None)
        self.model_info: dict[str, Any] = {}
        self.last_stream_mode = StreamMode.UNKNOWN

    @property
    def name(self) -> str:
        return "sglang"

    @property
    def abort_route(self) -> AbortRoute:
        """Where aborts go: straight to SGLang, or to the workers behind a gateway (known after `start`)."""
        return self._aborts.route

    async def start(self) -> None:
        """Check SGLang is reachable and serves a generation model (the expected one, if configured).

        Raises:
            BackendError: unreachable, HTTP error, wrong model, or no tokenizer to build prompts with.
        """
        info = await self._fetch_model_info()
        self.model_info = info
        if info.get("is_generation") is False:
            raise BackendError(
                "wrong_model", f"SGLang at {self._config.url} serves an embedding model, not an LLM"
            )
        expected = self._config.expected_model
        if expected and not model_matches(info, expected):
            served = info.get("served_model_name") or info.get("model_path")
            raise BackendError(
                "wrong_model", f"SGLang at {self._config.url} serves {served!r}, expected {expected!r}"
            )
        # Informational only: SGLang 0.5.23 derives this flag from config attribute names (``audio_config``),
        # so an externally registered model may serve audio while reporting False. The reported prompt length
        # of each audio request is the real check (`ChunkDecoder`).
        audio_flag = info.get("has_audio_understanding")
        if self._vocab is None:
            self._use_vocab(await asyncio.to_thread(load_model_vocab, self._config.model_dir, info))
        await self._aborts.probe(self._admin_headers())  # first: a gateway's workers report the context
        await self._learn_context_length()
        log.info(
            "SGLang at %s serves %s (architectures %s, has_audio_understanding %s, context %d tokens)",
            self._config.url,
            info.get("model_path"),
            info.get("architectures"),
            audio_flag,
            self.context_length,
        )

    async def check_reachable(self) -> None:
        """``GET /health`` of SGLang, or ``/readiness`` of a gateway (some worker healthy); cached for 1 s.

        Raises:
            BackendError: unreachable, or not healthy (``http_<status>``).
        """
        checked_at, error = self._probe
        now = time.monotonic()
        if now - checked_at >= PROBE_CACHE_S:
            error = await self._probe_once()
            self._probe = (time.monotonic(), error)
        if error is not None:
            raise error

    async def _probe_once(self) -> BackendError | None:
        path = GATEWAY_READY_PATH if self._aborts.route is AbortRoute.WORKERS else SGLANG_HEALTH_PATH
        try:
            response = await self._client.get(path, timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return _transport_error(exc, self._config.url, 0)
        if response.status_code >= HTTP_ERROR_FIRST:
            await response.aread()
            return _http_error(response)
        return None

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        """Stream new ids of one reply. See the module docstring for errors and cancellation."""
        prompt = await self._build(request)
        rid = request.rid
        body: dict[str, Any] = {
            "rid": rid,
            "input_ids": list(prompt.input_ids),
            "stream": True,
            "sampling_params": sampling_payload(
                request.sampling,
                self.vocab.eot,
                self._config.sampling,
                max_new_tokens=answer_budget(
                    request.sampling, prompt.expected_prompt_tokens, self.context_length
                ),
            ),
        }
        if prompt.audio:
            body["audio_data"] = prompt.audio_data()
        headers = {}
        if self._config.affinity_header and request.affinity_key:
            headers[self._config.affinity_header] = request.affinity_key
        decoder = ChunkDecoder(prompt, check_audio=self._config.check_audio)
        self._active.add(rid)
        finished = False
        refused = False  # an HTTP error status: the request never started, there is nothing to abort
        try:
            async with self._client.stream("POST", "/generate", json=body, headers=headers) as response:
                try:
                    if response.status_code >= HTTP_ERROR_FIRST:
                        refused = True
                        await response.aread()
                        raise _http_error(response)
                    routed = response.headers.get(ROUTED_WORKER_HEADER, "")
                    if routed.startswith(("http://", "https://")):
                        self._routed[rid] = routed
                    done = False
                    async for line in response.aiter_lines():
                        payload = sse_payload(line)
                        if payload is None or done:
                            continue  # after [DONE]: read to the end so the connection is reused
                        if payload == SSE_DONE:
                            done = True
                            continue
                        chunk = decoder.decode(parse_chunk_json(payload))
                        self.last_stream_mode = decoder.mode
                        finished = chunk.finish_reason is not None
                        if chunk.finish_reason is FinishReason.ABORT and rid not in self._aborted:
                            raise server_abort_error(decoder.finish_detail)
                        yield chunk
                finally:
                    # Cancelled or failed mid-way: stop the GPU before the socket closes.
                    if not finished and not refused:
                        self._abort_in_background(rid)
            if not finished:
                raise BackendError(
                    "stream_cut", f"SGLang ended the stream after {decoder.seen} ids without a finish reason"
                )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._config.url, decoder.seen) from exc
        except (asyncio.CancelledError, GeneratorExit):
            # cancelled while the request was being sent or its head awaited: SGLang may have it already
            if not finished and not refused and rid not in self._aborted:
                self._abort_in_background(rid)
            raise
        finally:
            self._active.discard(rid)
            self._aborted.discard(rid)
            self._routed.pop(rid, None)

    async def abort(self, rid: str) -> None:
        """``POST /abort_request {"rid"}`` where ``rid`` runs; idempotent, never raises (failures are logged)."""
        if rid in self._active:
            self._aborted.add(rid)
        elif self._aborts.route is AbortRoute.WORKERS:
            return  # generate() already aborted it on its way out, or it finished: nothing runs anywhere
        await self._aborts.abort(rid, self._admin_headers(), worker=self._routed.get(rid))

    def _admin_headers(self) -> dict[str, str]:
        key = self._config.admin_api_key or self._config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def aclose(self) -> None:
        """Wait for pending aborts, then close the connection pool."""
        if self._abort_tasks:
            await asyncio.gather(*self._abort_tasks, return_exceptions=True)
        await self._aborts.aclose()
        await self._client.aclose()

    def _abort_in_background(self, rid: str) -> None:
        self._aborted.add(rid)
        send = self._aborts.abort(rid, self._admin_headers(), worker=self._routed.get(rid))
        task = asyncio.get_running_loop().create_task(send, name=f"sglang-abort-{rid}")
        self._abort_tasks.add(task)
        task.add_done_callback(self._abort_tasks.discard)

    async def _learn_context_length(self) -> None:
        """The most tokens one request may use: the model's context length (``/v1/models``
        ``max_model_len``), lowered to what the scheduler admits (``/server_info`` ``max_req_input_len`` + 1:
        its KV pool may hold fewer tokens), lowered to the configured override."""
        limits = await self._reported_limits(self._client)
        if not limits and self._aborts.workers:
            # a gateway (smg) answers neither path itself: ask its workers, which all serve the same model
            async with httpx.AsyncClient(
                base_url=self._aborts.workers[0], timeout=self._client.timeout
            ) as worker:
                limits = await self._reported_limits(worker)
        if self._config.context_length is not None:
            limits.append(self._config.context_length)
        if not limits:
            raise BackendError(
                "wrong_server",
                f"SGLang at {self._config.url} reports no context length ({MODELS_PATH}, "
                f"{SERVER_INFO_PATHS[0]}): pass --context-length",
            )
        self._use_context_length(min(limits), f"SGLang at {self._config.url}")

    async def _reported_limits(self, client: httpx.AsyncClient) -> list[int]:
        """Context limits one server reports: ``max_model_len``, ``context_length``, ``max_req_input_len`` + 1."""
        limits: list[int] = []
        models = await self._get_json((MODELS_PATH,), client)
        cards = models.get("data") if models else None
        if isinstance(cards, list) and cards and isinstance(cards[0], dict):
            limits.extend(_positive_int(cards[0].get("max_model_len")))
        server = await self._get_json(SERVER_INFO_PATHS, client)
        if server:
            limits.extend(_positive_int(server.get("context_length")))
            limits.extend(n + 1 for n in _positive_int(server.get("max_req_input_len")))
        return limits

    async def _get_json(self, paths: tuple[str, ...], client: httpx.AsyncClient) -> dict[str, Any] | None:
        """The first of ``paths`` that answers a JSON object; None when none does (404 or not an object)."""
        for path in paths:
            try:
                response = await client.get(path)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self._config.url, 0) from exc
            if response.status_code >= HTTP_ERROR_FIRST:
                continue
            try:
                body = response.json()
            except ValueError:
                continue
            if isinstance(body, dict):
                return body
        return None

    async def _fetch_model_info(self) -> dict[str, Any]:
        for path in MODEL_INFO_PATHS:
            try:
                response = await self._client.get(path)
            except httpx.HTTPError as exc:
                error = _transport_error(exc, self._config.url, 0)
                hint = (
                    f"{error.message}. Start SGLang first (python -m sglang.launch_server --model-path ...) "
                    "or fix --sglang-url"
                )
                raise BackendError(error.code, hint) from exc
            if response.status_code == HTTP_NOT_FOUND:
                continue
            if response.status_code >= HTTP_ERROR_FIRST:
                raise _http_error(response)
            try:
                info = response.json()
            except ValueError as exc:
                raise BackendError("protocol_error", f"{path} did not return JSON") from exc
            if not isinstance(info, dict):
                raise BackendError("protocol_error", f"{path} did not return a JSON object")
            return info
        raise BackendError(
            "wrong_server",
            f"{self._config.url} answers but has neither {' nor '.join(MODEL_INFO_PATHS)}: is it an SGLang server?",
        )


def _http_error(response: httpx.Response) -> BackendError:
    detail = response.text[:ERROR_BODY_LIMIT]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if "error" in body:
            detail = error_message(body["error"])
        elif "message" in body:
            detail = str(body["message"])
    return sglang_error(detail, response.status_code)


def _transport_error(exc: httpx.HTTPError, url: str, ids_seen: int) -> BackendError:
    if isinstance(exc, httpx.ConnectError):
        return BackendError("connection_refused", f"cannot connect to SGLang at {url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__
        return BackendError("timeout", f"SGLang at {url} timed out ({kind}) after {ids_seen} ids")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return BackendError("stream_cut", f"the connection to SGLang broke after {ids_seen} ids: {exc}")
    return BackendError("http_error", f"HTTP error talking to SGLang at {url}: {exc}")


def _positive_int(value: Any) -> list[int]:
    """``[value]`` for a positive int (not a bool), else ``[]``."""
    return [value] if isinstance(value, int) and not isinstance(value, bool) and value > 0 else []
