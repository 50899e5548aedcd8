"""The flow module tree reproduces the released flow.pt key names and shapes exactly (strict loading)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.token2wav.flow_oracle import REFERENCE_TINY
from token2wav.config import FlowConfig, tiny_flow_config
from token2wav.errors import ModelLoadError
from token2wav.flow import CausalMaskedDiffWithXvec, load_flow_state_dict


def _meta_flow(config: FlowConfig) -> CausalMaskedDiffWithXvec:
    with torch.device("meta"):
        return CausalMaskedDiffWithXvec(config, noise=torch.zeros(1, 80, 1))


def test_full_size_keys_and_shapes_equal_the_released_list(data_dir: Path) -> None:
    recorded = json.loads((data_dir / "flow_state_dict_shapes.json").read_text())
    flow = _meta_flow(FlowConfig())
    ours = [(k, list(v.shape)) for k, v in flow.state_dict().items()]
    theirs = [(t["key"], t["shape"]) for t in recorded["tensors"]]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == recorded["num_tensors"] == 605
    assert sum(v.numel() for v in flow.state_dict().values()) == recorded["total_params"]
    # Non-persistent scratch (noise, reference scratch caches) is not part of the checkpoint.
    assert not any(k.startswith("decoder.rand_noise") for k, _ in ours)


def test_full_size_strict_load_of_meta_checkpoint(data_dir: Path) -> None:
    recorded = json.loads((data_dir / "flow_state_dict_shapes.json").read_text())
    state = {t["key"]: torch.empty(t["shape"], device="meta") for t in recorded["tensors"]}
    flow = _meta_flow(FlowConfig())
    flow.load_state_dict(state, strict=True, assign=True)
    missing = dict(state)
    missing.pop("encoder.after_norm.weight")
    with pytest.raises(ModelLoadError, match="after_norm"):
        load_flow_state_dict(_meta_flow(FlowConfig()), missing)
    extra = dict(state)
    extra["decoder.rand_noise"] = torch.empty(1, 80, 30000, device="meta")
    with pytest.raises(ModelLoadError, match="rand_noise"):
        load_flow_state_dict(_meta_flow(FlowConfig()), extra)


def test_tiny_oracle_checkpoint_loads_strictly() -> None:
    state = torch.load(REFERENCE_TINY / "flow.pt", weights_only=True)
    flow = CausalMaskedDiffWithXvec(tiny_flow_config(), noise=torch.zeros(1, 80, 1))
    load_flow_state_dict(flow, state)
    assert list(flow.state_dict()) == list(state)
    bad = dict(state)
    bad["encoder_proj.weight"] = torch.zeros(81, 64)
    with pytest.raises(ModelLoadError, match=r"encoder_proj\.weight"):
        load_flow_state_dict(flow, bad)
