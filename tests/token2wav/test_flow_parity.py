"""Flow parity with the tiny oracle: offline (mu, per-step x, mel), prompt priming, streaming chunks."""

from __future__ import annotations

import json

import pytest
import torch

from tests.token2wav.flow_oracle import (  # noqa: F401 - autouse fixture
    FLOW_ATOL,
    REFERENCE_TINY,
    arrays,
    gen_tokens,
    max_abs,
    model,
    one_torch_thread,
    tensor,
    voice,
)
from token2wav.stream import ChunkSchedule


def test_offline_flow_matches_oracle() -> None:
    flow = model().flow
    xs: list[torch.Tensor] = []
    velocities: dict[str, torch.Tensor] = {}

    def trace(step: int, x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> None:
        xs.append(x.clone())
        if step == 0:
            velocities["cond"], velocities["uncond"] = v_cond.clone(), v_uncond.clone()

    mus: list[torch.Tensor] = []
    v = voice()
    tokens = torch.tensor([gen_tokens()])
    mel = flow.inference(tokens, v.prompt_tokens, v.prompt_mel, v.spk_emb, trace=trace, mu_out=mus)
    ref = arrays("offline")
    assert max_abs(mus[0], ref["mu"]) <= FLOW_ATOL
    assert max_abs(velocities["cond"], ref["v_cfg_step1_cond"]) <= FLOW_ATOL
    assert max_abs(velocities["uncond"], ref["v_cfg_step1_uncond"]) <= FLOW_ATOL
    assert len(xs) == 10
    for step in range(9):
        assert max_abs(xs[step][0], ref["x_after_steps_1to9"][step]) <= FLOW_ATOL, step
    assert max_abs(mel, ref["mel"]) <= FLOW_ATOL


def test_priming_matches_oracle_setup_caches() -> None:
    primed = voice().primed
    dbg = arrays("debug")
    assert primed.prompt_frames == 100
    assert max_abs(primed.setup_mu, dbg["setup_mu"]) <= FLOW_ATOL
    assert max_abs(primed.encoder.packed_conv(), dbg["setup_conformer_cnn_cache"]) <= FLOW_ATOL
    assert max_abs(primed.encoder.packed_attention(), dbg["setup_conformer_att_cache"]) <= FLOW_ATOL
    assert max_abs(primed.dit.packed_conv(), dbg["setup_estimator_cnn_cache"]) <= FLOW_ATOL
    assert max_abs(primed.dit.packed_attention(), dbg["setup_estimator_att_cache"]) <= FLOW_ATOL


def test_streaming_flow_chunks_match_oracle_and_schedule() -> None:
    flow = model().flow
    schedule = json.loads((REFERENCE_TINY / "schedule.json").read_text())["schedule"]
    state = voice().primed.new_stream(2 * ChunkSchedule.reference().max_window_tokens())
    stream = arrays("stream")
    dbg = arrays("debug")
    for entry in schedule:
        i = entry["chunk"]
        tokens = tensor("stream", f"chunk{i}_tokens").reshape(1, -1)
        assert tokens[0].tolist() == gen_tokens()[entry["token_window"][0] : entry["token_window"][1]]
        assert state.noise_offset == entry["noise_offset"] == entry["dit_cache_len_in"]
        xs: list[torch.Tensor] = []
        mus: list[torch.Tensor] = []

        def trace(
            step: int,
            x: torch.Tensor,
            v_cond: torch.Tensor,
            v_uncond: torch.Tensor,
            xs: list[torch.Tensor] = xs,
        ) -> None:
            xs.append(x.clone())

        mel = flow.inference_chunk(tokens, state, entry["last_chunk"], trace=trace, mu_out=mus)
        assert mel.shape[2] == entry["mel_frames"]
        assert max_abs(mus[0], stream[f"chunk{i}_mu"]) <= FLOW_ATOL
        assert max_abs(mel, stream[f"chunk{i}_mel"]) <= FLOW_ATOL
        if i == 0:
            for step in range(10):
                assert max_abs(xs[step][0], dbg["chunk0_x_after_steps"][step]) <= FLOW_ATOL
        assert state.dit.length == entry["dit_cache_len_after_trim"]
        assert state.encoder.tokens == entry["encoder_cache_len_tokens_after"]
    # After the trim the noise offset stays put: the last two chunks read the same noise slice.
    assert schedule[2]["noise_offset"] == schedule[3]["noise_offset"] == state.noise_offset


def test_primed_voice_is_not_mutated_by_streams() -> None:
    primed = voice().primed
    before = primed.dit.packed_attention().clone()
    order = list(primed.dit.order)
    state = primed.new_stream(56)
    model().flow.inference_chunk(torch.tensor([gen_tokens()[:28]]), state, False)
    assert primed.dit.order == order
    assert torch.equal(primed.dit.packed_attention(), before)
    assert primed.encoder.tokens == 50


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_flow_runs_close_to_fp32(dtype: torch.dtype) -> None:
    from token2wav.model import Token2Wav

    low = Token2Wav.from_dir(REFERENCE_TINY, dtype=dtype, noise=tensor("cfm_noise", "cfm_noise"))
    v = low.voice_from_features(
        tensor("inputs", "prompt_tokens"), tensor("inputs", "prompt_mel"), tensor("inputs", "spk_emb"), "x"
    )
    state = v.primed.new_stream(56)
    mel = low.flow.inference_chunk(tensor("stream", "chunk0_tokens").reshape(1, -1), state, False)
    assert mel.dtype == dtype
    ref = tensor("stream", "chunk0_mel")
    # bf16 keeps ~3 significant digits; the mel is O(10): a loose sanity bound, not parity.
    assert torch.isfinite(mel.float()).all()
    assert float((mel.float() - ref).abs().mean()) < 0.5
