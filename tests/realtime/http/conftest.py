"""HTTP API fixtures: official openai SDK clients against the test servers, closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from openai import AsyncOpenAI

from tests.support.server_harness import ServerHandle

SdkFactory = Callable[..., AsyncOpenAI]


@pytest.fixture
async def sdk() -> AsyncIterator[SdkFactory]:
    """``sdk(server, index=0, key="x")``: an `AsyncOpenAI` on ``server``'s app ``index`` (no retries)."""
    made: list[AsyncOpenAI] = []

    def make(server: ServerHandle, index: int = 0, key: str = "x") -> AsyncOpenAI:
        client = AsyncOpenAI(api_key=key, base_url=server.http_url("/v1", index=index), max_retries=0)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
