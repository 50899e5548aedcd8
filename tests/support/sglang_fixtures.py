"""Fixtures of the SGLang backend tests: the tiny tokenizer folder, its vocab, and a running fake SGLang.

Imported by name from the test modules (``from tests.support.sglang_fixtures import ...``) so they do not
collide with other helpers' ``conftest.py`` in this folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig
from realtime.backends.sglang.vocab import ModelVocab
from realtime.config import ServerConfig
from realtime.config_groups import LLMOptions
from tests.support.fake_sglang import FakeSGLangServer
from tests.support.server_harness import ServerHandle, start_server
from tests.support.tiny_tokenizer import write_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding only the tiny tokenizer (what the HTTP backend needs locally)."""
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny-step-audio2"))


@pytest.fixture(scope="session")
def tiny_vocab(tiny_model_dir: Path) -> ModelVocab:
    return ModelVocab.from_model_dir(tiny_model_dir)


@pytest.fixture
def fake_sglang() -> Iterator[FakeSGLangServer]:
    """A fresh fake SGLang server on a free 127.0.0.1 port, stopped after the test."""
    with FakeSGLangServer() as server:
        yield server


@pytest.fixture
async def http_backend(
    fake_sglang: FakeSGLangServer, tiny_model_dir: Path
) -> AsyncIterator[SGLangHTTPBackend]:
    """A started HTTP backend pointed at the fake."""
    backend = SGLangHTTPBackend(SGLangHTTPConfig(url=fake_sglang.url, model_dir=tiny_model_dir))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.aclose()


def start_on_fake(fake: FakeSGLangServer, model_dir: Path, cache_dir: Path) -> ServerHandle:
    """Our server on the ``sglang`` (HTTP) backend pointed at a fake SGLang, with the tiny tokenizer folder."""
    config = ServerConfig(
        backend="sglang",
        model_path="/models/Step-Audio-2-mini",
        llm=LLMOptions(sglang_url=fake.url, model_dir=model_dir),
        cache_dir=cache_dir,
    )
    return start_server(config)
