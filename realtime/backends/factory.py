"""Build the configured LLM backend, and the command-line flags the backends need.

The synthetic case belongs to the realtime server; the SGLang cases (``sglang``: a running SGLang HTTP server,
``sglang-engine``: SGLang in-process) belong to the SGLang backend modules, imported lazily so the synthetic
default never imports httpx clients or sglang.

Flags whose dest is a `ServerConfig` field (``--model-path``, ``--sglang-url``) fill that field; the others
(``--model-dir``, ``--sglang-api-key``, ...) arrive in ``ServerConfig.backend_options`` by dest and are read by
`create_backend`. ``STREAMVOICE_MODEL_DIR``, ``STREAMVOICE_SGLANG_API_KEY`` and
``STREAMVOICE_SGLANG_ADMIN_API_KEY`` stand in for their flags (secrets are better kept out of ``ps``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from realtime.backends.base import BackendError, LLMBackend
from realtime.config import ServerConfig

ENV_MODEL_DIR = "STREAMVOICE_MODEL_DIR"
ENV_API_KEY = "STREAMVOICE_SGLANG_API_KEY"
ENV_ADMIN_API_KEY = "STREAMVOICE_SGLANG_ADMIN_API_KEY"
DEFAULT_SGLANG_TIMEOUT_S = 60.0


def _add_once(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, **kwargs: Any) -> None:
    # serve.py may already define a flag (e.g. --backend); argparse refuses duplicates.
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)


def add_backend_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Flags of the LLM backends. Unset flags stay out of the namespace, so env vars and config defaults apply."""
    _add_once(
        parser,
        "--backend",
        default=argparse.SUPPRESS,
        choices=["synthetic", "sglang", "sglang-engine"],
        help="token source: synthetic (the embedded demo), sglang (a running SGLang server) or sglang-engine "
        "(SGLang in this process). Env: STREAMVOICE_BACKEND.",
    )
    _add_once(
        parser,
        "--model-path",
        default=argparse.SUPPRESS,
        help="Step-Audio-2-mini model folder or hub id: the model SGLang must serve (checked at start-up with "
        "/model_info), and the weights for --backend sglang-engine. Env: STREAMVOICE_MODEL_PATH.",
    )
    _add_once(
        parser,
        "--model-dir",
        default=argparse.SUPPRESS,
        help="local model folder with tokenizer.json for prompt ids and transcripts (default: --model-path "
        f"when it is a local folder, else the server's tokenizer_path if local). Env: {ENV_MODEL_DIR}.",
    )
    _add_once(
        parser,
        "--sglang-url",
        default=argparse.SUPPRESS,
        help="base URL of a running SGLang server for --backend sglang (default http://127.0.0.1:30000). "
        "Env: STREAMVOICE_SGLANG_URL.",
    )
    _add_once(
        parser,
        "--sglang-api-key",
        default=argparse.SUPPRESS,
        help=f"bearer token of an SGLang started with --api-key. Env: {ENV_API_KEY}.",
    )
    _add_once(
        parser,
        "--sglang-admin-api-key",
        default=argparse.SUPPRESS,
        help="bearer token for /abort_request on an SGLang started with --admin-api-key (default: the API "
        f"key). Env: {ENV_ADMIN_API_KEY}.",
    )
    _add_once(
        parser,
        "--sglang-worker-urls",
        default=argparse.SUPPRESS,
        metavar="URL[,URL...]",
        help="when --sglang-url is an SGLang Model Gateway (smg), the SGLang workers behind it, comma-separated: "
        "a cancelled response is aborted on them directly (smg does not route /abort_request). Default: the "
        "gateway's own GET /workers list.",
    )
    _add_once(
        parser,
        "--sglang-affinity-header",
        default=argparse.SUPPRESS,
        help="request header carrying the session's id on every /generate, so a gateway started with "
        "--routing-key-override keeps a session on the worker holding its prompt prefix (default "
        "x-smg-routing-key; an empty value sends none).",
    )
    _add_once(
        parser,
        "--sglang-timeout",
        type=float,
        default=argparse.SUPPRESS,
        help=f"seconds to wait for SGLang's next chunk before failing the response (default "
        f"{DEFAULT_SGLANG_TIMEOUT_S:g}).",
    )
    _add_once(
        parser,
        "--top-p",
        type=float,
        default=argparse.SUPPRESS,
        help="server-wide nucleus sampling top_p (the Realtime API has no such field; default 0.9).",
    )
    _add_once(
        parser,
        "--repetition-penalty",
        type=float,
        default=argparse.SUPPRESS,
        help="server-wide repetition penalty (the Realtime API has no such field; default 1.05).",
    )
    _add_once(
        parser,
        "--no-audio-check",
        action="store_true",
        default=argparse.SUPPRESS,
        help="do not fail responses whose reported prompt length shows SGLang dropped the user audio.",
    )
    _add_once(
        parser,
        "--engine-arg",
        action="append",
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="extra sglang.Engine / ServerArgs argument for --backend sglang-engine, e.g. "
        "mem_fraction_static=0.6 or load_format=dummy (JSON values are parsed); repeatable.",
    )


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
    options = config.backend_options
    from realtime.backends.sglang.stream import ServerSampling

    sampling = ServerSampling(
        top_p=_float_option(options, "top_p"), repetition_penalty=_float_option(options, "repetition_penalty")
    )
    check_audio = not options.get("no_audio_check")
    model_dir = _model_dir(config)
    if config.backend == "sglang":
        from realtime.backends.sglang.http import DEFAULT_AFFINITY_HEADER, SGLangHTTPBackend, SGLangHTTPConfig

        timeout = _float_option(options, "sglang_timeout") or DEFAULT_SGLANG_TIMEOUT_S
        return SGLangHTTPBackend(
            SGLangHTTPConfig(
                url=config.sglang_url,
                model_dir=model_dir,
                expected_model=config.model_path,
                api_key=_str_option(options, "sglang_api_key") or os.environ.get(ENV_API_KEY) or None,
                admin_api_key=_str_option(options, "sglang_admin_api_key")
                or os.environ.get(ENV_ADMIN_API_KEY)
                or None,
                read_timeout_s=timeout,
                check_audio=check_audio,
                sampling=sampling,
                context_length=config.context_length or None,
                worker_urls=_url_list(_str_option(options, "sglang_worker_urls")),
                affinity_header=_header_option(options, "sglang_affinity_header", DEFAULT_AFFINITY_HEADER),
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
            engine_args=parse_engine_args(_list_option(options, "engine_arg")),
            check_audio=check_audio,
            sampling=sampling,
            context_length=config.context_length or None,
        )
    )


def parse_engine_args(specs: Sequence[object]) -> dict[str, object]:
    """``["mem_fraction_static=0.6", "load_format=dummy"]`` -> kwargs; values parse as JSON when they can.

    Raises:
        BackendError: ``bad_option`` for an entry without ``=``.
    """
    parsed: dict[str, object] = {}
    for spec in specs:
        key, sep, raw = str(spec).partition("=")
        if not sep or not key.strip():
            raise BackendError("bad_option", f"--engine-arg must be KEY=VALUE, got {spec!r}")
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed[key.strip().replace("-", "_")] = value
    return parsed


def _model_dir(config: ServerConfig) -> Path | None:
    explicit = _str_option(config.backend_options, "model_dir") or os.environ.get(ENV_MODEL_DIR)
    if explicit:
        return Path(explicit).expanduser()
    if config.model_path:
        candidate = Path(config.model_path).expanduser()
        if candidate.is_dir():
            return candidate
    return None


def _str_option(options: Mapping[str, object], name: str) -> str | None:
    value = options.get(name)
    return None if value is None else str(value)


def _url_list(value: str | None) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in (value or "").split(",") if part.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise BackendError("bad_option", f"--sglang-worker-urls: {url!r} is not an http(s) URL")
    return urls


def _header_option(options: Mapping[str, object], name: str, default: str) -> str:
    value = _str_option(options, name)
    if value is None:
        return default
    value = value.strip()
    if value and not all(c.isalnum() or c in "-_" for c in value):
        raise BackendError("bad_option", f"--{name.replace('_', '-')}: {value!r} is not an HTTP header name")
    return value


def _list_option(options: Mapping[str, object], name: str) -> list[object]:
    value = options.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _float_option(options: Mapping[str, object], name: str) -> float | None:
    value = options.get(name)
    if value is None:
        return None
    try:
        return float(str(value))
    except ValueError as exc:
        raise BackendError(
            "bad_option", f"--{name.replace('_', '-')} must be a number, got {value!r}"
        ) from exc
