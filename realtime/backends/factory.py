"""Build the configured LLM backend, and the command-line flags the backends need.

The synthetic case belongs to the realtime server; the SGLang cases (``sglang``: a running SGLang HTTP server,
``sglang-engine``: SGLang in-process) belong to the SGLang backend modules, imported lazily so the synthetic
default never imports httpx clients or sglang.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from realtime.backends.base import BackendError, LLMBackend
from realtime.config import ServerConfig


def add_backend_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Flags of the SGLang backends. Dests that match `ServerConfig` fields fill those fields; any other
    dest lands in ``ServerConfig.backend_options``. Defaults are None so env vars and config defaults apply.
    """
    parser.add_argument(
        "--model-path",
        default=None,
        help="Step-Audio-2-mini model folder (tokenizer, and weights for --backend sglang-engine). "
        "Env: STREAMVOICE_MODEL_PATH.",
    )
    parser.add_argument(
        "--sglang-url",
        default=None,
        help="Base URL of a running SGLang server for --backend sglang (default http://127.0.0.1:30000). "
        "Env: STREAMVOICE_SGLANG_URL.",
    )


def create_backend(config: ServerConfig) -> LLMBackend:
    """The backend named by ``config.backend`` (not started yet: call ``await backend.start()``).

    Raises:
        BackendError: the backend kind needs a module or setting that is missing (code ``backend_unavailable``).
    """
    if config.backend == "synthetic":
        from realtime.backends.synthetic import SyntheticBackend

        return SyntheticBackend(
            tokens_per_second=config.synthetic_tokens_per_second,
            seed=config.synthetic_seed,
        )
    if config.backend == "sglang":
        from realtime.backends.sglang_http import SGLangHTTPBackend, SGLangHTTPConfig

        model_dir = Path(config.model_path).expanduser() if config.model_path else None
        local_dir = model_dir if model_dir is not None and model_dir.is_dir() else None
        return SGLangHTTPBackend(
            SGLangHTTPConfig(url=config.sglang_url, model_dir=local_dir, expected_model=config.model_path)
        )
    try:
        sglang_engine = importlib.import_module("realtime.backends.sglang_engine")
    except ImportError as exc:
        raise BackendError(
            "backend_unavailable",
            f"--backend {config.backend} needs realtime.backends.sglang_engine, which failed to import: {exc}",
        ) from exc
    factory = getattr(sglang_engine, "create_engine_backend", None)
    if factory is None:
        raise BackendError(
            "backend_unavailable", "realtime.backends.sglang_engine has no create_engine_backend"
        )
    backend: LLMBackend = factory(config)
    return backend
