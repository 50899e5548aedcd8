"""Hyper-parameters of the flow model and the HiFT vocoder, and safe readers for their files.

`flow.yaml` (the released file) is HyperPyYAML with four `!new:` class tags. It is read with a `SafeLoader`
subclass that knows exactly those four tags and turns each into an inert frozen dataclass; no module named
by a tag is ever imported and any other tag is refused by SafeLoader itself (docs/TOKEN2WAV.md §1.2). Unknown
or missing keys and wrong scalar types raise `ConfigError` naming the file, the YAML path and the key.

The tiny oracle's `config.yaml` is plain YAML with the same values (plus an explicit `activation_type` and a
`hift` section); `read_reference_config` reads it with the same strict field checks.

Size: over 400 lines: every frozen config of the model and the safe reader of its YAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from token2wav.errors import ConfigError

_OPTIONAL = "optional"  # dataclass field metadata key: the key may be absent from the file
_T = TypeVar("_T")


@dataclass(frozen=True)
class EncoderConfig:
    """`UpsampleConformerEncoderV2` hyper-parameters (flow.yaml `flow.encoder`). Defaults = full size."""

    input_size: int = 512
    output_size: int = 512
    input_layer: str = "linear"
    pre_lookahead_len: int = 3
    num_blocks: int = 6
    num_up_blocks: int = 4
    up_stride: int = 2
    up_scale_factor: float = 2.0
    attention_heads: int = 8
    pos_enc_layer_type: str = "rel_pos_espnet"
    selfattention_layer_type: str = "rel_selfattn"
    key_bias: bool = True
    linear_units: int = 2048
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    normalize_before: bool = True
    # Not written in the released flow.yaml: the class default.
    activation_type: str = field(default="swish", metadata={_OPTIONAL: True})

    def check_supported(self, where: str) -> None:
        """Raise `ConfigError` for values this implementation does not implement."""
        _expect(where, "input_layer", self.input_layer, "linear")
        _expect(where, "pos_enc_layer_type", self.pos_enc_layer_type, "rel_pos_espnet")
        _expect(where, "selfattention_layer_type", self.selfattention_layer_type, "rel_selfattn")
        _expect(where, "activation_type", self.activation_type, "swish")
        _expect(where, "normalize_before", self.normalize_before, True)
        _expect(where, "up_scale_factor", float(self.up_scale_factor), float(self.up_stride))
        if self.output_size % self.attention_heads:
            raise ConfigError(f"{where}: output_size {self.output_size} not divisible by attention_heads")
        if self.input_size != self.output_size:
            raise ConfigError(f"{where}: input_size must equal output_size (the up_embed layer needs it)")


@dataclass(frozen=True)
class DitConfig:
    """`DiT` estimator hyper-parameters (flow.yaml `flow.decoder.estimator`). Defaults = full size."""

    in_channels: int = 320
    out_channels: int = 80
    mlp_ratio: float = 4.0
    depth: int = 16
    num_heads: int = 8
    head_dim: int = 64
    hidden_size: int = 512

    def check_supported(self, where: str) -> None:
        """Raise `ConfigError` for values this implementation does not implement."""
        if self.num_heads * self.head_dim != self.hidden_size:
            raise ConfigError(f"{where}: num_heads * head_dim must equal hidden_size")
        if self.in_channels != 4 * self.out_channels:
            raise ConfigError(f"{where}: in_channels must be 4 x out_channels (x, mu, spk, cond)")


@dataclass(frozen=True)
class CfmConfig:
    """`CausalConditionalCFM` hyper-parameters (flow.yaml `flow.decoder`)."""

    inference_cfg_rate: float = 0.7
    estimator: DitConfig = field(default_factory=DitConfig)


@dataclass(frozen=True)
class FlowConfig:
    """`CausalMaskedDiffWithXvec` hyper-parameters (flow.yaml `flow`). Defaults = full size."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    output_type: str = "mel"
    vocab_size: int = 6561
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: CfmConfig = field(default_factory=CfmConfig)

    def check_supported(self, where: str = "flow") -> None:
        """Raise `ConfigError` for any value combination this implementation does not implement."""
        _expect(where, "output_type", self.output_type, "mel")
        self.encoder.check_supported(f"{where}.encoder")
        self.decoder.estimator.check_supported(f"{where}.decoder.estimator")
        if self.input_size != self.encoder.input_size:
            raise ConfigError(f"{where}: input_size must equal encoder.input_size")
        if self.decoder.estimator.out_channels != self.output_size:
            raise ConfigError(f"{where}: decoder.estimator.out_channels must equal output_size")


@dataclass(frozen=True)
class SamplerConfig:
    """Fixed inference settings of the CFM sampler (not in flow.yaml; docs/TOKEN2WAV.md §3.3)."""

    n_timesteps: int = 10
    temperature: float = 1.0
    noise_frames: int = 30000  # buffer [1, 80, 30000]: 600 s of mel frames
    noise_seed: int = 0


@dataclass(frozen=True)
class F0PredictorConfig:
    """`ConvRNNF0Predictor` hyper-parameters."""

    num_class: int = 1
    in_channels: int = 80
    cond_channels: int = 512


@dataclass(frozen=True)
class HiftConfig:
    """`HiFTGenerator` hyper-parameters (constructor defaults; hift.pt has no config file)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_params: tuple[tuple[str, int], ...] = (("n_fft", 16), ("hop_len", 4))
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_predictor: F0PredictorConfig = field(default_factory=F0PredictorConfig)

    @property
    def n_fft(self) -> int:
        """iSTFT size."""
        return dict(self.istft_params)["n_fft"]

    @property
    def hop_len(self) -> int:
        """iSTFT hop."""
        return dict(self.istft_params)["hop_len"]


# ---------------------------------------------------------------------------------------------------------
# Strict mapping -> dataclass conversion


def _expect(where: str, key: str, value: object, wanted: object) -> None:
    if value != wanted:
        raise ConfigError(f"{where}: unsupported {key}={value!r} (this implementation supports {wanted!r})")


def _check_scalar(where: str, key: str, value: object, annotation: object) -> object:
    """Type-check one scalar against its annotation; an int passes as float, a bool never as a number."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{where}: key {key!r} has an unsupported declared type {annotation!r}")
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{where}: key {key!r} must be {name}, got {type(value).__name__} {value!r}")


def _convert(where: str, key: str, value: object, annotation: object) -> object:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: key {key!r} must be a mapping")
        return build_config(annotation, value, f"{where}.{key}")
    if origin is tuple:
        args = typing.get_args(annotation)
        item_type = args[0]
        if typing.get_origin(item_type) is tuple and typing.get_args(item_type)[0] is str:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: key {key!r} must be a mapping")
            value_type = typing.get_args(item_type)[1]
            return tuple(
                (str(k), _check_scalar(f"{where}.{key}", str(k), v, value_type)) for k, v in value.items()
            )
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: key {key!r} must be a list, got {type(value).__name__}")
        return tuple(_convert(f"{where}.{key}", f"[{i}]", v, item_type) for i, v in enumerate(value))
    if isinstance(annotation, types.UnionType):
        raise ConfigError(f"{where}: key {key!r} has an unsupported declared type")
    return _check_scalar(where, key, value, annotation)


def build_config(cls: type[_T], fields: Mapping[Any, Any], where: str) -> _T:
    """Build the frozen dataclass `cls` from a mapping, strictly.

    Args:
        cls: one of the config dataclasses of this module.
        fields: the mapping read from YAML.
        where: YAML path for messages, e.g. `"flow.yaml: flow.encoder"`.

    Raises:
        ConfigError: unknown key, missing required key, or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a config dataclass")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in fields:
        if key not in known:
            raise ConfigError(f"{where}: unexpected key {key!r}")
    kwargs: dict[str, object] = {}
    for name, fdef in known.items():
        if name not in fields:
            if fdef.metadata.get(_OPTIONAL):
                continue
            raise ConfigError(f"{where}: missing key {name!r}")
        kwargs[name] = _convert(where, name, fields[name], hints[name])
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# flow.yaml (HyperPyYAML with four class tags)

FLOW_TAGS: dict[str, type] = {
    "!new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec": FlowConfig,
    "!new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2": EncoderConfig,
    "!new:cosyvoice2.flow.flow_matching.CausalConditionalCFM": CfmConfig,
    "!new:cosyvoice2.flow.decoder_dit.DiT": DitConfig,
}


@dataclass(frozen=True)
class _Tagged:
    """A tagged mapping as read; converted to its dataclass once its YAML path is known."""

    cls: type
    fields: dict[Any, Any]


class _FlowYamlLoader(yaml.SafeLoader):
    """SafeLoader that understands only the four flow.yaml component tags (no import ever happens)."""


def _tag_constructor(cls: type) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> _Tagged:
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"tag {node.tag} must label a mapping (line {node.start_mark.line + 1})")
        return _Tagged(cls, loader.construct_mapping(node, deep=True))

    return construct


for _tag, _cls in FLOW_TAGS.items():
    _FlowYamlLoader.add_constructor(_tag, _tag_constructor(_cls))


def _untag(value: object, expected: type, where: str) -> object:
    """Replace `_Tagged` nodes by their dataclasses, checking that each tag sits where its class belongs."""
    if not isinstance(value, _Tagged):
        raise ConfigError(f"{where}: expected a mapping tagged for {expected.__name__}")
    if value.cls is not expected:
        raise ConfigError(f"{where}: tag for {value.cls.__name__} where {expected.__name__} belongs")
    hints = typing.get_type_hints(expected)
    fields = dict(value.fields)
    for key, sub in list(fields.items()):
        annotation = hints.get(key) if isinstance(key, str) else None
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            fields[key] = _untag(sub, annotation, f"{where}.{key}")
        elif isinstance(sub, _Tagged):
            raise ConfigError(f"{where}: key {key!r} must not carry a class tag")
    return build_config(expected, _as_plain(fields), where)


def _as_plain(fields: dict[Any, Any]) -> dict[Any, Any]:
    """Dataclass values built by `_untag` are turned back into mappings for `build_config`."""
    return {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for k, v in fields.items()
    }


def parse_flow_yaml(text: str, source: str = "flow.yaml") -> FlowConfig:
    """Parse the text of a released `flow.yaml` into a checked `FlowConfig`.

    Raises:
        ConfigError: YAML error, a tag other than the four known ones, unknown/missing keys, wrong types or
            unsupported values; the message starts with `source`.
    """
    try:
        document = yaml.load(text, Loader=_FlowYamlLoader)  # SafeLoader subclass: only 4 inert tags
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not a valid flow.yaml: {exc}") from None
    if not isinstance(document, dict) or "flow" not in document:
        raise ConfigError(f"{source}: expected a top-level key 'flow'")
    extra = sorted(str(k) for k in document if k != "flow")
    if extra:
        raise ConfigError(f"{source}: unexpected top-level key {extra[0]!r}")
    config = _untag(document["flow"], FlowConfig, f"{source}: flow")
    assert isinstance(config, FlowConfig)
    config.check_supported(f"{source}: flow")
    return config


def read_flow_yaml(path: str | Path) -> FlowConfig:
    """Read and check a released `flow.yaml` file (see `parse_flow_yaml`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_flow_yaml(text, str(p))


def dump_flow_yaml(config: FlowConfig) -> str:
    """Write `config` in the released tagged layout (inverse of `parse_flow_yaml`)."""
    tag_of = {cls: tag for tag, cls in FLOW_TAGS.items()}

    def emit(obj: object, indent: int) -> list[str]:
        lines: list[str] = []
        pad = "  " * indent
        assert dataclasses.is_dataclass(obj) and not isinstance(obj, type)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get(_OPTIONAL):
                continue
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                lines.append(f"{pad}{f.name}: {tag_of[type(value)]}")
                lines.extend(emit(value, indent + 1))
            else:
                lines.append(f"{pad}{f.name}: {yaml.safe_dump(value, default_flow_style=True).strip()}")
                if lines[-1].endswith("\n..."):
                    lines[-1] = lines[-1][: -len("\n...")]
        return lines

    body = emit(config, 1)
    return "\n".join([f"flow: {tag_of[FlowConfig]}", *body]) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Plain config.yaml of the tiny oracle


@dataclass(frozen=True)
class ReferenceConfig:
    """Everything the oracle's plain `config.yaml` declares that our modules use."""

    flow: FlowConfig
    hift: HiftConfig
    sampler: SamplerConfig


def read_reference_config(path: str | Path) -> ReferenceConfig:
    """Read the tiny oracle's plain `config.yaml` (no tags) with the same strict checks.

    The `inference` and `streaming` sections are checked against the constants this implementation uses.
    """
    p = Path(path)
    try:
        document = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{p}: expected a mapping")
    for key in ("flow", "hift", "inference"):
        if not isinstance(document.get(key), dict):
            raise ConfigError(f"{p}: missing section {key!r}")
    flow = build_config(FlowConfig, document["flow"], f"{p}: flow")
    flow.check_supported(f"{p}: flow")
    hift = build_config(HiftConfig, document["hift"], f"{p}: hift")
    inference = document["inference"]
    sampler = SamplerConfig(
        n_timesteps=int(inference.get("n_timesteps", SamplerConfig.n_timesteps)),
        temperature=float(inference.get("temperature", SamplerConfig.temperature)),
        noise_frames=int(inference.get("cfm_noise_frames", SamplerConfig.noise_frames)),
    )
    scheduler = inference.get("t_scheduler", "cosine")
    if scheduler != "cosine":
        raise ConfigError(f"{p}: inference: unsupported t_scheduler {scheduler!r}")
    return ReferenceConfig(flow=flow, hift=hift, sampler=sampler)


def tiny_flow_config() -> FlowConfig:
    """The tiny oracle architecture (same structure as the released model, smaller sizes)."""
    return FlowConfig(
        input_size=64,
        encoder=EncoderConfig(
            input_size=64, output_size=64, num_blocks=2, num_up_blocks=1, attention_heads=4, linear_units=128
        ),
        decoder=CfmConfig(estimator=DitConfig(depth=2, num_heads=4, head_dim=16, hidden_size=64)),
    )


def tiny_hift_config() -> HiftConfig:
    """The tiny oracle vocoder (base 64 channels, f0 conditioning 64)."""
    return HiftConfig(base_channels=64, f0_predictor=F0PredictorConfig(cond_channels=64))
