"""Deliver ``POST /abort_request {"rid"}`` to the SGLang worker running a request, directly or past a gateway.

Straight to SGLang, ``/abort_request`` on the configured URL is the whole story. The SGLang Model Gateway
(``smg``, HTTP mode) does not route ``/abort_request`` (it answers 404); it forwards ``/generate`` to one worker
chosen by its policy and names it in the ``x-smg-routed-worker-id`` response header. Closing our stream does
reach that worker (the gateway drops its upstream connection, and SGLang aborts a disconnected request two
seconds later), but two seconds of GPU per barge-in is waste, so past a gateway the abort goes straight to the
named worker; when none was named (the cancel came before the response headers), to every worker the gateway
lists (``GET /workers``) or the URLs configured with ``--sglang-worker-urls``. SGLang ignores an abort for a
rid it does not run. A named worker URL is trusted as the gateway's word: the gateway is our own component.

Which of the two applies is probed once at start-up by asking for the worker list (SGLang has none), and
corrected on the first abort that a "direct" URL answers with 404. Failures are logged, never raised: an
abort is best effort and the stream is closed anyway.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping, Sequence

import httpx

log = logging.getLogger(__name__)

ABORT_PATH = "/abort_request"
WORKERS_PATH = "/workers"
HTTP_OK_LAST = 299
NOT_ROUTED = frozenset({404, 405})  # the gateway has no such route
WORKER_LIST_TTL_S = 10.0  # re-read the gateway's worker list at most this often (workers come and go)
MAX_FANOUT = 64  # more workers than this behind one gateway is a deployment we have not sized for


class AbortRoute(enum.Enum):
    """Where aborts go."""

    UNKNOWN = "unknown"  # not probed yet
    DIRECT = "direct"  # the URL is an SGLang server (or a proxy that routes /abort_request)
    WORKERS = "workers"  # the URL is a gateway: send to each of its workers


class AbortDelivery:
    """Sends aborts for one backend. Use from one event loop.

    Args:
        client: the backend's HTTP client (its base URL is the SGLang server or gateway).
        worker_urls: SGLang worker base URLs to abort on past a gateway; empty: ask the gateway.
        timeout_s: limit of each abort call (and of the worker-list read).
    """

    def __init__(self, client: httpx.AsyncClient, worker_urls: Sequence[str], timeout_s: float) -> None:
        self._client = client
        self._configured = tuple(url.rstrip("/") for url in worker_urls)
        self._timeout_s = timeout_s
        self._workers: tuple[str, ...] = self._configured
        self._workers_read_at = float("-inf")
        self._direct = httpx.AsyncClient(timeout=timeout_s)  # to the workers themselves, past the gateway
        self.route = AbortRoute.UNKNOWN

    @property
    def workers(self) -> tuple[str, ...]:
        """The worker URLs the last fan-out used (empty before one, or when talking to SGLang directly)."""
        return self._workers

    async def probe(self, headers: Mapping[str, str]) -> AbortRoute:
        """Tell a gateway from SGLang by its worker list (``GET /workers``, which SGLang does not serve).

        Read-only: a URL that lists no workers is taken as SGLang itself; should its ``/abort_request`` turn
        out to be missing (404), `abort` switches to the workers then.
        """
        listed = await self._read_workers(headers)
        if listed is None:
            self.route = AbortRoute.DIRECT
            return self.route
        self.route = AbortRoute.WORKERS
        if not self._configured:
            self._workers, self._workers_read_at = listed, time.monotonic()
        log.info(
            "%s is a gateway (it lists %d worker(s)); aborts go to %s",
            self._client.base_url,
            len(listed),
            ", ".join(self._workers) or "(no worker yet)",
        )
        return self.route

    async def abort(self, rid: str, headers: Mapping[str, str], *, worker: str | None = None) -> None:
        """Abort ``rid`` where it runs; never raises.

        Args:
            rid: the request id.
            headers: auth headers for ``/abort_request``.
            worker: past a gateway, the worker it said runs ``rid`` (its ``x-smg-routed-worker-id``
                response header); None: every worker.
        """
        if self.route is not AbortRoute.WORKERS:
            status = await self._post(self._client, ABORT_PATH, rid, headers)
            if status is None:
                return
            if status not in NOT_ROUTED:
                self.route = AbortRoute.DIRECT
                if status > HTTP_OK_LAST:
                    log.warning("SGLang refused to abort %s: HTTP %d", rid, status)
                return
            self.route = AbortRoute.WORKERS
        workers = (worker.rstrip("/"),) if worker else await self._current_workers(headers)
        if not workers:
            log.warning(
                "cannot abort %s: the gateway at %s lists no workers and --sglang-worker-urls is not set; "
                "its worker aborts the request 2 s after the stream closes",
                rid,
                self._client.base_url,
            )
            return
        results = await asyncio.gather(
            *(self._post(self._direct, f"{url}{ABORT_PATH}", rid, headers) for url in workers)
        )
        refused = [
            f"{url} ({code})"
            for url, code in zip(workers, results, strict=True)
            if code and code > HTTP_OK_LAST
        ]
        if refused:
            log.warning("workers refused to abort %s: %s", rid, ", ".join(refused))

    async def aclose(self) -> None:
        """Close the connections to the workers."""
        await self._direct.aclose()

    async def _post(
        self, client: httpx.AsyncClient, url: str, rid: str, headers: Mapping[str, str]
    ) -> int | None:
        try:
            response = await client.post(
                url, json={"rid": rid}, headers=dict(headers), timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            log.warning("could not abort SGLang request %s at %s: %s", rid, url, exc)
            return None
        return response.status_code

    async def _current_workers(self, headers: Mapping[str, str]) -> tuple[str, ...]:
        if self._configured:
            return self._configured
        now = time.monotonic()
        if now - self._workers_read_at >= WORKER_LIST_TTL_S:
            self._workers_read_at = now
            listed = await self._read_workers(headers)
            if listed is None:
                log.warning(
                    "the gateway at %s did not list its workers (GET %s)", self._client.base_url, WORKERS_PATH
                )
            else:
                self._workers = listed
        return self._workers

    async def _read_workers(self, headers: Mapping[str, str]) -> tuple[str, ...] | None:
        """The gateway's worker URLs, or None when the URL does not answer ``GET /workers`` with a list."""
        try:
            response = await self._client.get(WORKERS_PATH, headers=dict(headers), timeout=self._timeout_s)
            if response.status_code > HTTP_OK_LAST:
                return None
            listed = worker_urls_of(response.json())
        except (httpx.HTTPError, ValueError):
            return None
        return None if listed is None else listed[:MAX_FANOUT]


def worker_urls_of(body: object) -> tuple[str, ...] | None:
    """Worker base URLs in an ``smg`` ``GET /workers`` body (``{"workers": [{"url": ...}, ...]}``), else None."""
    entries = body.get("workers") if isinstance(body, Mapping) else None
    if not isinstance(entries, list):
        return None
    urls: list[str] = []
    for entry in entries:
        url = entry.get("url") if isinstance(entry, Mapping) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            urls.append(url.rstrip("/"))
    return tuple(urls)
