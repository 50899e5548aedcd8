"""`realtime serve` backend flags -> ServerConfig -> the configured backend (not started)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from realtime.backends.base import BackendError
from realtime.backends.factory import create_backend
from realtime.backends.sglang.engine import SGLangEngineBackend
from realtime.backends.sglang.http import SGLangHTTPBackend
from realtime.backends.sglang.stream import ServerSampling
from realtime.commands.serve import add_arguments, config_from_args
from realtime.config_groups import parse_engine_arg
from realtime.settings import SettingError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_sglang_http_backend_from_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMVOICE_SGLANG_API_KEY", "secret")
    args = parse(
        [
            "--backend", "sglang", "--sglang-url", "http://127.0.0.1:31000", "--model-path", "stepfun/Step-Audio-2-mini",
            "--model-dir", str(tmp_path), "--sglang-timeout", "12", "--top-p", "0.8", "--no-audio-check",
        ]
    )  # fmt: skip
    backend = create_backend(config_from_args(args))
    assert isinstance(backend, SGLangHTTPBackend)
    config = backend._config
    assert config.url == "http://127.0.0.1:31000"
    assert config.model_dir == tmp_path
    assert config.expected_model == "stepfun/Step-Audio-2-mini"
    assert config.api_key == "secret" and config.admin_api_key is None
    assert config.read_timeout_s == 12.0
    assert config.sampling == ServerSampling(top_p=0.8)
    assert config.check_audio is False


def test_model_path_folder_doubles_as_tokenizer_folder(tmp_path: Path) -> None:
    backend = create_backend(config_from_args(parse(["--backend", "sglang", "--model-path", str(tmp_path)])))
    assert isinstance(backend, SGLangHTTPBackend)
    assert backend._config.model_dir == tmp_path
    assert backend._config.check_audio is True


def test_engine_backend_from_flags(tmp_path: Path) -> None:
    args = parse(
        ["--backend", "sglang-engine", "--model-path", str(tmp_path), "--engine-arg", "mem_fraction_static=0.6",
         "--engine-arg", "load-format=dummy", "--repetition-penalty", "1.1"]
    )  # fmt: skip
    backend = create_backend(config_from_args(args))
    assert isinstance(backend, SGLangEngineBackend)
    assert backend._config.engine_args == {"mem_fraction_static": 0.6, "load_format": "dummy"}
    assert backend._config.sampling == ServerSampling(repetition_penalty=1.1)


def test_engine_backend_needs_a_model_path() -> None:
    with pytest.raises(BackendError) as caught:
        create_backend(config_from_args(parse(["--backend", "sglang-engine"])))
    assert caught.value.code == "bad_option"


def test_parse_engine_arg() -> None:
    parsed = [parse_engine_arg(spec) for spec in ("a=1", "b=true", "c=text", "d=[1, 2]", "e-f=x=y")]
    assert parsed == [("a", 1), ("b", True), ("c", "text"), ("d", [1, 2]), ("e_f", "x=y")]
    with pytest.raises(ValueError):
        parse_engine_arg("novalue")
    with pytest.raises(SettingError, match="--engine-arg / STREAMVOICE_ENGINE_ARGS: must be KEY=VALUE"):
        config_from_args(parse(["--engine-arg", "novalue"]))


def test_context_flags_reach_every_backend(tmp_path: Path) -> None:
    from realtime.backends.synthetic import DEFAULT_CONTEXT_LENGTH, SyntheticBackend

    synthetic = create_backend(config_from_args(parse([])))
    assert isinstance(synthetic, SyntheticBackend) and synthetic.context_length == DEFAULT_CONTEXT_LENGTH
    config = config_from_args(parse(["--context-length", "2048", "--min-answer-tokens", "32"]))
    assert (config.context_length, config.min_answer_tokens) == (2048, 32)
    assert create_backend(config).context_length == 2048
    http = create_backend(config_from_args(parse(["--backend", "sglang", "--context-length", "1024"])))
    assert isinstance(http, SGLangHTTPBackend) and http._config.context_length == 1024
    engine = create_backend(
        config_from_args(parse(["--backend", "sglang-engine", "--model-path", str(tmp_path)]))
    )
    assert (
        isinstance(engine, SGLangEngineBackend) and engine._config.context_length is None
    )  # the engine's own


def test_gateway_flags(tmp_path: Path) -> None:
    args = parse(
        ["--backend", "sglang", "--model-dir", str(tmp_path), "--sglang-url", "http://gateway:30000",
         "--sglang-worker-urls", "http://llm-1:30001, http://llm-2:30001/", "--sglang-affinity-header", "x-session"]
    )  # fmt: skip
    backend = create_backend(config_from_args(args))
    assert isinstance(backend, SGLangHTTPBackend)
    assert backend._config.worker_urls == ("http://llm-1:30001", "http://llm-2:30001/")
    assert backend._config.affinity_header == "x-session"
    default = create_backend(config_from_args(parse(["--backend", "sglang", "--model-dir", str(tmp_path)])))
    assert isinstance(default, SGLangHTTPBackend)
    assert default._config.worker_urls == () and default._config.affinity_header == "x-smg-routing-key"
    off = parse(["--backend", "sglang", "--model-dir", str(tmp_path), "--sglang-affinity-header", ""])
    assert create_backend(config_from_args(off))._config.affinity_header == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--sglang-worker-urls", "llm-1:30001", "'llm-1:30001' is not an http(s) URL"),
        ("--sglang-affinity-header", "x session", "'x session' is not an HTTP header name"),
    ],
)
def test_bad_gateway_flags_are_clear_errors(tmp_path: Path, flag: str, value: str, message: str) -> None:
    args = parse(["--backend", "sglang", "--model-dir", str(tmp_path), flag, value])
    with pytest.raises(SettingError) as caught:
        config_from_args(args)
    assert message in str(caught.value) and flag in str(caught.value)
