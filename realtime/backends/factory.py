"""Build the configured LLM backend from `ServerConfig` (its ``llm`` group holds the SGLang backends' options).

The synthetic case belongs to the realtime server; the SGLang cases (``sglang``: a running SGLang HTTP server,
``sglang-engine``: SGLang in-process) belong to the SGLang backend modules, imported lazily so the synthetic
default never imports httpx clients or sglang. The flags and variables behind these options are declared in
`realtime.config` (`LLMOptions`).
"""

from __future__ import annotations

from pathlib import Path

from realtime.backends.base import BackendError, LLMBackend
from realtime.config import ServerConfig


def create_backend(config: ServerConfig) -> LLMBackend:
    """The backend named by ``config.backend`` (not started yet: call ``await backend.start()``).

    Raises:
        BackendError: the backend kind needs a module or setting that is missing (code ``backend_unavailable``
            or ``bad_option``).
    """
    if config.backend == "synthetic":
        from realtime.backends.synthetic import DEFAULT_CONTEXT_LENGTH, SyntheticBackend

        return SyntheticBackend(
            tokens_per_second=config.synthetic_tokens_per_second,
            seed=config.synthetic_seed,
            context_length=config.context_length or DEFAULT_CONTEXT_LENGTH,
        )
    options = config.llm
    from realtime.backends.sglang.stream import ServerSampling

    sampling = ServerSampling(top_p=options.top_p, repetition_penalty=options.repetition_penalty)
    model_dir = _model_dir(config)
    if config.backend == "sglang":
        from realtime.backends.sglang.http import SGLangHTTPBackend, SGLangHTTPConfig

        return SGLangHTTPBackend(
            SGLangHTTPConfig(
                url=options.sglang_url,
                model_dir=model_dir,
                expected_model=config.model_path,
                api_key=options.sglang_api_key or None,
                admin_api_key=options.sglang_admin_api_key or None,
                read_timeout_s=options.sglang_timeout,
                check_audio=options.audio_check,
                sampling=sampling,
                context_length=config.context_length or None,
                worker_urls=options.sglang_worker_urls,
                affinity_header=options.sglang_affinity_header,
            )
        )
    if not config.model_path:
        raise BackendError(
            "bad_option", "--backend sglang-engine needs --model-path (the Step-Audio-2 model)"
        )
    from realtime.backends.sglang.engine import SGLangEngineBackend, SGLangEngineConfig

    return SGLangEngineBackend(
        SGLangEngineConfig(
            model_path=config.model_path,
            model_dir=model_dir,
            engine_args=dict(options.engine_args),
            check_audio=options.audio_check,
            sampling=sampling,
            context_length=config.context_length or None,
        )
    )


def _model_dir(config: ServerConfig) -> Path | None:
    if config.llm.model_dir is not None:
        return config.llm.model_dir
    if config.model_path:
        candidate = Path(config.model_path).expanduser()
        if candidate.is_dir():
            return candidate
    return None
