"""flow.yaml safe reader: the four tags map to configs; anything else is refused with file + path + key."""

from __future__ import annotations

import sys

import pytest

from tests.token2wav.flow_oracle import REFERENCE_TINY
from token2wav.config import (
    FlowConfig,
    dump_flow_yaml,
    parse_flow_yaml,
    read_reference_config,
    tiny_flow_config,
    tiny_hift_config,
)
from token2wav.errors import ConfigError

RELEASED = """\
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: 512
        output_size: 512
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: 6
        num_up_blocks: 4
        up_stride: 2
        up_scale_factor: 2
        attention_heads: 8
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: true
        linear_units: 2048
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: true
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: 4.0
            depth: 16
            num_heads: 8
            head_dim: 64
            hidden_size: 512
"""


def test_released_layout_parses_to_full_size_defaults() -> None:
    config = parse_flow_yaml(RELEASED)
    assert config == FlowConfig()
    assert config.encoder.up_scale_factor == 2.0 and isinstance(config.encoder.up_scale_factor, float)
    assert "cosyvoice2" not in sys.modules  # a tag never imports anything


def test_dump_round_trips() -> None:
    for config in (FlowConfig(), tiny_flow_config()):
        assert parse_flow_yaml(dump_flow_yaml(config)) == config


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("num_blocks: 6", "num_blocks: 6\n        foo: 1", "flow.encoder: unexpected key 'foo'"),
        ("        num_blocks: 6\n", "", "flow.encoder: missing key 'num_blocks'"),
        ("depth: 16", "depth: '16'", "flow.decoder.estimator: key 'depth' must be int"),
        ("depth: 16", "depth: true", "key 'depth' must be int"),
        ("depth: 16", "depth: 16.0", "key 'depth' must be int"),
        ("key_bias: true", "key_bias: 1", "key 'key_bias' must be bool"),
        ("inference_cfg_rate: 0.7", "inference_cfg_rate: yes", "key 'inference_cfg_rate' must be float"),
        ("input_layer: 'linear'", "input_layer: 'conv2d'", "unsupported input_layer"),
        ("!new:cosyvoice2.flow.decoder_dit.DiT", "!new:os.system", "could not determine a constructor"),
        ("!new:cosyvoice2.flow.decoder_dit.DiT", "!!python/object:os.system", "could not determine"),
        (
            "!new:cosyvoice2.flow.decoder_dit.DiT",
            "!new:cosyvoice2.flow.flow_matching.CausalConditionalCFM",
            "tag for CfmConfig where DitConfig belongs",
        ),
    ],
)
def test_bad_files_raise_config_error_naming_the_key(old: str, new: str, message: str) -> None:
    assert old in RELEASED
    with pytest.raises(ConfigError) as info:
        parse_flow_yaml(RELEASED.replace(old, new, 1), "model/flow.yaml")
    assert str(info.value).startswith("model/flow.yaml")
    assert message in str(info.value)
    assert "cosyvoice2" not in sys.modules


def test_top_level_must_be_flow_only() -> None:
    with pytest.raises(ConfigError, match="unexpected top-level key 'hift'"):
        parse_flow_yaml(RELEASED + "hift: 1\n")
    with pytest.raises(ConfigError, match="top-level key 'flow'"):
        parse_flow_yaml("foo: 1\n")
    with pytest.raises(ConfigError, match=r"not a valid flow\.yaml"):
        parse_flow_yaml("flow: [unclosed\n")


def test_reference_plain_config_reads_tiny_sizes() -> None:
    reference = read_reference_config(REFERENCE_TINY / "config.yaml")
    assert reference.flow == tiny_flow_config()
    assert reference.hift == tiny_hift_config()
    assert reference.sampler.n_timesteps == 10
    assert reference.sampler.noise_frames == 30000
