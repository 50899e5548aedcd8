"""Every ``realtime serve`` setting, walked from its one declaration: flag, variable, help, parsing and bounds.

The declarations are the fields of `realtime.config.ServerConfig` (and its groups) made with
`realtime.settings.setting`; these tests hold for a setting added tomorrow without being edited, except that a
setting whose values need their own parser (``item=``) needs a sample in `SAMPLES`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from realtime.cli import build_parser
from realtime.commands import serve
from realtime.config import ServerConfig
from realtime.config_groups import LLMOptions, WebRTCOptions, parse_ice_server
from realtime.settings import Section, SettingError, SettingSpec, build, markdown_table, settings_of

SPECS = settings_of(ServerConfig)
# valid text values of the settings whose type alone does not say what one looks like
SAMPLES: dict[str, tuple[str, ...]] = {
    "voices": ("alice=/voices/alice.wav", "bob=~/bob.wav"),
    "engine_args": ('json_model_override_args={"a": 1, "b": 2}', "load-format=dummy"),
    "allowed_origins": ("http://a.example:8000/", "https://b.example"),
    "sglang_worker_urls": ("http://llm-1:30001", "https://llm-2:30001/"),
    "sglang_affinity_header": ("x-session",),
    "webrtc_ice_servers": (
        "stun:stun.example.com:3478",
        "turn:user:p%40ss@turn.example.com:3478?transport=tcp",
    ),
    "webrtc_public_ip": ("198.51.100.7",),
}
# Names users' scripts already use: each must stay a flag / a variable of `realtime serve`.
LEGACY_FLAGS = (
    "--host --port --max-sessions --max-session-seconds --dialect --api-key --allowed-origins --send-timeout "
    "--ws-ping-interval --ws-ping-timeout --max-out-of-band --max-decoder-streams --decoder-memory-mb "
    "--decoder-wait --max-conversation-items --max-conversation-mb --max-conversation-audio-seconds "
    "--drain-seconds --backend --synthetic-rate --synthetic-seed --context-length --min-answer-tokens "
    "--model-path --model-dir --sglang-url --sglang-api-key --sglang-admin-api-key --sglang-worker-urls "
    "--sglang-affinity-header --sglang-timeout --top-p --repetition-penalty --no-audio-check --engine-arg "
    "--token2wav-dir --cache-dir --device --dtype --first-chunk --hop --hop-growth --torch-threads "
    "--worker-queue --worker-batch --voice --default-voice --max-delta-ms --log-level"
).split()
LEGACY_ENV = (
    "HOST PORT BACKEND MODEL_PATH SGLANG_URL TOKEN2WAV_DIR CACHE_DIR DEVICE DTYPE FIRST_HOP_TOKENS HOP_TOKENS "
    "HOP_GROWTH VOICES DEFAULT_VOICE SYNTHETIC_TOKENS_PER_SECOND SYNTHETIC_SEED MAX_SESSIONS WORKER_QUEUE "
    "WORKER_BATCH MAX_AUDIO_DELTA_MS TORCH_THREADS LOG_LEVEL API_KEY MAX_SESSION_SECONDS DIALECT CONTEXT_LENGTH "
    "MIN_ANSWER_TOKENS SEND_TIMEOUT WS_PING_INTERVAL WS_PING_TIMEOUT MAX_OUT_OF_BAND_RESPONSES "
    "MAX_DECODER_STREAMS DECODER_MEMORY_MB DECODER_WAIT_SECONDS MAX_CONVERSATION_ITEMS MAX_CONVERSATION_MB "
    "MAX_CONVERSATION_AUDIO_SECONDS ALLOWED_ORIGINS DRAIN_SECONDS MODEL_DIR SGLANG_API_KEY SGLANG_ADMIN_API_KEY"
).split()


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser


def from_flags(argv: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    return build(ServerConfig, environ or {}, serve_parser().parse_args(argv))


def value_of(config: ServerConfig, spec: SettingSpec) -> object:
    value: object = config
    for name in spec.path:
        value = getattr(value, name)
    return value


def sample_texts(spec: SettingSpec) -> tuple[str, ...]:
    """Valid text values of ``spec`` (several for a list), different from its default where it can be."""
    if spec.name in SAMPLES:
        return SAMPLES[spec.name]
    assert spec.declared.item is None, f"add a sample of {spec.name} to SAMPLES"
    kind, declared = spec.type, spec.declared
    if kind.choices:
        return (next(choice for choice in reversed(kind.choices) if choice != spec.default),)
    if kind.base is bool:
        return ("false" if spec.default else "true",)
    if kind.base in (int, float):
        low = declared.ge if declared.ge is not None else declared.gt if declared.gt is not None else 0
        value = low + (0.5 if declared.le is not None and declared.le - low <= 1 else 3)
        value = min(value, declared.le) if declared.le is not None else value
        return (str(int(value)) if kind.base is int else str(value),)
    if kind.base is Path:
        return ("~/settings-sample",)
    return ("settings-sample",)


def flag_argv(spec: SettingSpec, texts: tuple[str, ...]) -> list[str]:
    if spec.type.base is bool and not spec.type.many:
        return [spec.flag]
    if spec.declared.repeat:
        return [part for text in texts for part in (spec.flag, text)]
    return [spec.flag, spec.declared.separator.join(texts)]


def test_the_declarations_resolve_with_unique_names() -> None:
    assert len(SPECS) >= len(LEGACY_FLAGS)
    for attribute in ("name", "flag", "env"):
        names = [getattr(spec, attribute) for spec in SPECS]
        assert len(names) == len(set(names)), attribute
    assert all(spec.env.startswith("STREAMVOICE_") and spec.flag.startswith("--") for spec in SPECS)


def test_every_name_users_have_still_works() -> None:
    flags = {spec.flag for spec in SPECS}
    envs = {spec.env for spec in SPECS}
    assert [flag for flag in LEGACY_FLAGS if flag not in flags] == []
    assert [env for env in LEGACY_ENV if f"STREAMVOICE_{env}" not in envs] == []


def test_serve_help_lists_every_flag_with_its_default_and_variable() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = subparsers.choices["serve"].format_help()
    squeezed = "".join(help_text.split())  # argparse wraps lines, also at hyphens
    for spec in SPECS:
        assert f"{spec.flag} " in help_text or f"{spec.flag}\n" in help_text, spec.flag
        assert spec.declared.help, spec.name
        assert f"(default: {spec.shown_default}; env {spec.env}" in spec.help_line
        assert "".join(spec.help_line.split()) in squeezed, spec.name


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_the_variable_parses_to_what_the_flag_does(spec: SettingSpec) -> None:
    texts = sample_texts(spec)
    by_flag = value_of(from_flags(flag_argv(spec, texts)), spec)
    env_text = spec.declared.separator.join(texts)
    by_env = value_of(ServerConfig.from_env({spec.env: env_text}), spec)
    assert by_flag == by_env
    assert by_flag != spec.default, "the sample should change the value"
    # and the flag wins over the variable
    assert value_of(from_flags(flag_argv(spec, texts), {spec.env: "not used"}), spec) == by_flag


def out_of_bounds(spec: SettingSpec) -> list[float]:
    """Values just past each of ``spec``'s bounds."""
    step = 1 if spec.type.base is int else 0.5
    declared = spec.declared
    return (
        ([declared.ge - step] if declared.ge is not None else [])
        + ([declared.gt] if declared.gt is not None else [])
        + ([declared.le + step] if declared.le is not None else [])
    )


@pytest.mark.parametrize(
    ("spec", "bad"),
    [(spec, bad) for spec in SPECS for bad in out_of_bounds(spec)],
    ids=lambda value: value.name if isinstance(value, SettingSpec) else str(value),
)
def test_bounds_are_enforced_and_errors_name_flag_and_variable(spec: SettingSpec, bad: float) -> None:
    text = str(int(bad)) if spec.type.base is int else str(bad)
    for source in ("flag", "env"):
        with pytest.raises(SettingError) as caught:
            if source == "flag":
                from_flags([spec.flag, text])
            else:
                ServerConfig.from_env({spec.env: text})
        assert spec.flag in str(caught.value) and spec.env in str(caught.value)
    owner = spec.owner if spec.owner in (LLMOptions, WebRTCOptions) else ServerConfig
    with pytest.raises(SettingError, match=spec.env):
        owner(**{spec.name: int(bad) if spec.type.base is int else bad})


@pytest.mark.parametrize(
    "spec",
    [spec for spec in SPECS if spec.type.choices or spec.type.base in (int, float)],
    ids=lambda s: s.name,
)
def test_text_that_does_not_parse_is_refused_naming_both(spec: SettingSpec) -> None:
    with pytest.raises(SettingError) as by_flag:
        from_flags([spec.flag, "nonsense"])
    with pytest.raises(SettingError) as by_env:
        ServerConfig.from_env({spec.env: "nonsense"})
    for caught in (by_flag, by_env):
        assert spec.flag in str(caught.value) and spec.env in str(caught.value)
    assert "given as " + spec.flag in str(by_flag.value)
    assert f"given as {spec.env}=" in str(by_env.value)


def test_precedence_and_unset() -> None:
    assert ServerConfig.from_env({}) == ServerConfig()
    assert ServerConfig.from_env({"STREAMVOICE_PORT": ""}).port == 8000  # an empty variable is unset
    assert from_flags([], {"STREAMVOICE_PORT": "9000"}).port == 9000
    assert from_flags(["--port", "9001"], {"STREAMVOICE_PORT": "9000"}).port == 9001
    assert ServerConfig.from_env({"STREAMVOICE_PORT": "9000"}, port=9002, host=None).port == 9002
    config = from_flags(["--sglang-timeout", "5"], {"STREAMVOICE_TOP_P": "0.5"})
    assert config.llm == LLMOptions(sglang_timeout=5.0, top_p=0.5)


def test_list_settings_parse_each_element() -> None:
    argv = ["--voice", "a=a.wav", "--voice", "b=~/b.wav", "--allowed-origins", "http://x:1/, *"]
    config = from_flags([*argv, "--no-audio-check"])
    assert config.voices == (("a", Path("a.wav")), ("b", Path("~/b.wav").expanduser()))
    assert config.allowed_origins == ("http://x:1", "*")
    assert config.llm.audio_check is False
    env = ServerConfig.from_env({"STREAMVOICE_ENGINE_ARGS": "mem_fraction_static=0.6; sleep_on_idle=true"})
    assert env.llm.engine_args == (("mem_fraction_static", 0.6), ("sleep_on_idle", True))
    with pytest.raises(SettingError, match=r"--voice / STREAMVOICE_VOICES: voice must be NAME=PATH\.wav"):
        ServerConfig.from_env({"STREAMVOICE_VOICES": "nameless.wav"})


def test_groups_are_typed_and_frozen() -> None:
    config = ServerConfig()
    assert isinstance(config.llm, LLMOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.llm.top_p = 0.5  # type: ignore[misc]
    assert {spec.path for spec in SPECS if spec.owner is LLMOptions} == {
        ("llm", field.name) for field in dataclasses.fields(LLMOptions)
    }


def test_markdown_table_lists_the_section() -> None:
    table = markdown_table(ServerConfig, Section.LIMITS)
    limits = [spec for spec in SPECS if spec.declared.section is Section.LIMITS]
    assert len(table.splitlines()) == 2 + len(limits)
    assert "| `--max-sessions N` | `STREAMVOICE_MAX_SESSIONS` | 32 |" in table


def test_server_defaults_equal_the_defaults_of_what_they_configure() -> None:
    """A library part used without the server (tests, benchmarks) behaves as the server's default does."""
    from realtime.backends.base import SamplingParams
    from realtime.backends.context import DEFAULT_MIN_ANSWER_TOKENS
    from realtime.backends.sglang.http import SGLangHTTPConfig
    from realtime.backends.synthetic import DEFAULT_CONTEXT_LENGTH, DEFAULT_TOKENS_PER_SECOND
    from realtime.speech.worker import DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING
    from token2wav.stream import ChunkSchedule

    schedule, http = ChunkSchedule(), SGLangHTTPConfig(url="http://x")
    defaults = {spec.name: spec.default for spec in SPECS}
    assert (defaults["first_hop_tokens"], defaults["hop_tokens"], defaults["hop_growth"]) == (
        schedule.first_hop_tokens,
        schedule.hop_tokens,
        schedule.hop_growth,
    )
    assert (defaults["worker_queue"], defaults["worker_batch"]) == (DEFAULT_MAX_PENDING, DEFAULT_MAX_BATCH)
    assert defaults["synthetic_tokens_per_second"] == DEFAULT_TOKENS_PER_SECOND
    assert defaults["min_answer_tokens"] == DEFAULT_MIN_ANSWER_TOKENS
    assert (defaults["sglang_timeout"], defaults["sglang_affinity_header"]) == (
        http.read_timeout_s,
        http.affinity_header,
    )
    assert defaults["sglang_url"] == "http://127.0.0.1:30000"  # SGLang's own default port
    shown = {spec.name: spec.shown_default for spec in SPECS}  # defaults described in words
    assert f"synthetic: {DEFAULT_CONTEXT_LENGTH}" in shown["context_length"]
    assert f"{SamplingParams().top_p:g}" in shown["top_p"]
    assert f"{SamplingParams().repetition_penalty:g}" in shown["repetition_penalty"]


def test_ice_server_urls_parse_with_their_credentials() -> None:
    assert parse_ice_server("stun:stun.example.com") == ("stun:stun.example.com", "", "")
    turn = parse_ice_server("turns:us%3Aer:p%40ss@turn.example.com:5349?transport=tcp")
    assert turn == ("turns:turn.example.com:5349?transport=tcp", "us:er", "p@ss")
    for bad in ("http://x", "turn:turn.example.com", "stun:u:p@host", "stun:"):
        with pytest.raises(ValueError):
            parse_ice_server(bad)
