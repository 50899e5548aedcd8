"""Unit tests of the plugin's pure parts: no SGLang needed (front end, formula, encoder shapes, key mapping)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from step_audio2_sglang import audio
from step_audio2_sglang.config import ARCHITECTURE, StepAudio2Config
from step_audio2_sglang.encoder import AudioAdapter, AudioEncoder, embed_blocks
from step_audio2_sglang.weights import WeightTarget, map_checkpoint_key

PLACEHOLDER = audio.PlaceholderIds(audio_start=151_688, audio_patch=151_690, audio_end=151_689)


@pytest.mark.parametrize(
    "n_samples", [1, 159, 160, 161, 479, 480, 1600, 16_000, 16_001, audio.BLOCK_SAMPLES - 1]
)
def test_mel_frames_and_patch_count_match_the_features(n_samples: int) -> None:
    torch.manual_seed(0)
    mel = audio.log_mel(torch.randn(n_samples) * 0.1)
    assert mel.shape == (audio.N_MELS, audio.num_mel_frames(n_samples))
    assert mel.dtype == torch.float32
    assert torch.isfinite(mel).all()


def test_patch_formula_reference_values() -> None:
    # 25 s: (400000 + 479) // 160 = 2502 frames -> enc 625 -> 313 patches (≈12.5 per second).
    assert audio.num_mel_frames(audio.BLOCK_SAMPLES) == 2502
    assert audio.num_encoder_frames(2502) == 625
    assert audio.num_patches(2502) == 313
    # Tiny tails: one sample still yields one patch; formula enc = (T+1)//2//2, n = (enc-1)//2+1.
    assert audio.num_patches(audio.num_mel_frames(1)) == 1
    for frames in range(3, 3000):
        enc = (frames + 1) // 2 // 2
        assert audio.num_patches(frames) == (enc - 1) // 2 + 1


def test_blocks_of_a_long_clip() -> None:
    n = 2 * audio.BLOCK_SAMPLES + 16_000
    blocks = audio.split_blocks(torch.zeros(n))
    assert [b.numel() for b in blocks] == [audio.BLOCK_SAMPLES, audio.BLOCK_SAMPLES, 16_000]
    assert audio.block_patch_counts(n) == [313, 313, audio.num_patches(audio.num_mel_frames(16_000))]
    assert audio.block_patch_counts(audio.BLOCK_SAMPLES) == [313]
    assert audio.clip_prompt_tokens(audio.BLOCK_SAMPLES + 1) == 313 + 2 + 1 + 2
    with pytest.raises(ValueError, match="empty"):
        audio.split_blocks(torch.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        audio.block_patch_counts(0)


def test_expand_placeholders_keeps_other_ids_verbatim() -> None:
    p = PLACEHOLDER
    ids = [1, 2, p.audio_start, p.audio_patch, p.audio_end, 3, p.audio_start, p.audio_patch, p.audio_end, 4]
    out = audio.expand_placeholders(ids, [[2, 1], [3]], p)
    s, t, e = p.audio_start, p.audio_patch, p.audio_end
    assert out == [1, 2, s, t, t, e, s, t, e, 3, s, t, t, t, e, 4]
    assert audio.patch_runs(out, t) == [(3, 4), (7, 7), (11, 13)]
    assert len(out) == audio.expected_prompt_tokens(len(ids), []) + (2 + 2) + (1 + 2) + (3 + 2) - 6
    with pytest.raises(ValueError, match="more audio placeholders than the 1 clips"):
        audio.expand_placeholders(ids, [[2]], p)
    with pytest.raises(ValueError, match="2 audio placeholders but 3 clips"):
        audio.expand_placeholders(ids, [[1], [1], [1]], p)


def test_expected_prompt_tokens_matches_expansion() -> None:
    p = PLACEHOLDER
    clips = [16_000, audio.BLOCK_SAMPLES + 8_000]
    ids = [7, p.audio_start, p.audio_patch, p.audio_end, 8, p.audio_start, p.audio_patch, p.audio_end]
    out = audio.expand_placeholders(ids, [audio.block_patch_counts(n) for n in clips], p)
    assert len(out) == audio.expected_prompt_tokens(len(ids), clips)


def test_encoder_and_adapter_emit_exactly_the_placeholder_count() -> None:
    torch.manual_seed(0)
    encoder = AudioEncoder(n_mels=audio.N_MELS, n_ctx=1500, width=16, heads=2, layers=1).eval()
    adapter = AudioAdapter(width=16, llm_dim=24, kernel_size=3, stride=2, hidden=32).eval()
    lengths = [1, 800, 16_000, 23_999]
    mels = [audio.log_mel(torch.randn(n) * 0.1) for n in lengths]
    with torch.no_grad():
        out = embed_blocks(encoder, adapter, mels)
        per_block = [embed_blocks(encoder, adapter, [m]).shape[0] for m in mels]
    assert per_block == [audio.num_patches(m.shape[-1]) for m in mels]
    assert out.shape == (sum(per_block), 24)
    with pytest.raises(ValueError, match="n_audio_ctx"):
        AudioEncoder(n_mels=audio.N_MELS, n_ctx=4, width=16, heads=2, layers=1)(
            torch.zeros(1, audio.N_MELS, 20)
        )


def test_encoder_parameter_names_follow_the_checkpoint() -> None:
    encoder = AudioEncoder(n_mels=128, n_ctx=8, width=8, heads=2, layers=1)
    adapter = AudioAdapter(width=8, llm_dim=8, kernel_size=3, stride=2, hidden=8)
    names = {f"encoder.{n}" for n, _ in encoder.named_parameters()} | {
        f"adapter.{n}" for n, _ in adapter.named_parameters()
    }
    for key in (
        "encoder.conv1.weight",
        "encoder.conv2.bias",
        "encoder.positional_embedding.weight",
        "encoder.blocks.0.attn.query.weight",
        "encoder.blocks.0.attn.key.weight",
        "encoder.blocks.0.attn.value.bias",
        "encoder.blocks.0.attn.out.weight",
        "encoder.blocks.0.attn_ln.weight",
        "encoder.blocks.0.mlp.0.weight",
        "encoder.blocks.0.mlp.2.bias",
        "encoder.blocks.0.mlp_ln.bias",
        "encoder.after_norm.weight",
        "adapter.conv.weight",
        "adapter.linear1.weight",
        "adapter.linear2.bias",
    ):
        assert key in names
    assert "encoder.blocks.0.attn.key.bias" not in names  # Whisper's key projection has no bias


def test_checkpoint_key_mapping() -> None:
    assert map_checkpoint_key("model.layers.3.self_attn.q_proj.weight") == WeightTarget(
        "model.layers.3.self_attn.qkv_proj.weight", "q"
    )
    assert map_checkpoint_key("model.layers.3.self_attn.v_proj.bias") == WeightTarget(
        "model.layers.3.self_attn.qkv_proj.bias", "v"
    )
    assert map_checkpoint_key("model.layers.0.mlp.up_proj.weight") == WeightTarget(
        "model.layers.0.mlp.gate_up_proj.weight", 1
    )
    assert map_checkpoint_key("model.layers.0.mlp.down_proj.weight") == WeightTarget(
        "model.layers.0.mlp.down_proj.weight"
    )
    assert map_checkpoint_key("encoder.blocks.0.attn.key.weight") == WeightTarget(
        "encoder.blocks.0.attn.key.weight"
    )
    assert map_checkpoint_key("lm_head.weight") == WeightTarget("lm_head.weight")
    assert map_checkpoint_key("lm_head.weight", tie_word_embeddings=True) is None
    assert map_checkpoint_key("model.layers.0.self_attn.rotary_emb.inv_freq") is None


def test_config_reads_the_checkpoint_layout() -> None:
    config = StepAudio2Config(
        text_config={"model_type": "qwen2", "vocab_size": 158_720, "hidden_size": 64, "num_hidden_layers": 2},
        audio_encoder_config={"n_audio_state": 32, "llm_dim": 64},
        torch_dtype="bfloat16",
    )
    assert config.architectures == [ARCHITECTURE]
    assert config.text_config.vocab_size == 158_720
    assert config.audio_encoder_config.n_audio_state == 32
    assert config.audio_encoder_config.adapter_hidden_size == 2048
    assert config.text_config.dtype == torch.bfloat16
    again = StepAudio2Config(**{k: v for k, v in config.to_dict().items() if k != "model_type"})
    assert again.text_config.hidden_size == 64
    assert again.audio_encoder_config.llm_dim == 64


def test_registration_failure_is_not_swallowed_by_sglang(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLang's plugin loader catches ``Exception``; our failure must escape it (no silent fallback)."""
    from step_audio2_sglang import register as plugin

    def broken() -> None:
        raise ImportError("simulated: sglang API moved")

    monkeypatch.setattr(plugin, "_register_model", broken)
    monkeypatch.setattr(plugin, "_register_config", lambda: None)
    with pytest.raises(plugin.StepAudio2PluginError, match="simulated: sglang API moved") as caught:
        try:
            plugin.register()
        except Exception:  # what sglang.srt.plugins.load_plugins does with plugin errors
            pytest.fail("the plugin error was an Exception, so SGLang would have swallowed it")
    assert not isinstance(caught.value, Exception)
    assert "TransformersForCausalLM" in str(caught.value)


def _slaney_filters() -> Any:
    """transformers' slaney mel bank for the plugin's STFT size (librosa's, which the reference uses)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=audio.N_FFT // 2 + 1,
        num_mel_filters=audio.N_MELS,
        min_frequency=0.0,
        max_frequency=audio.SAMPLE_RATE / 2,
        sampling_rate=audio.SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )


def test_mel_filters_match_transformers_slaney_bank() -> None:
    """Same filter bank as the reference (librosa's slaney mel = transformers' mel_filter_bank)."""
    np = pytest.importorskip("numpy")
    reference = _slaney_filters()
    assert np.abs(audio.mel_filters().numpy().T - reference).max() < 1e-6


def test_log_mel_matches_a_direct_reference_computation() -> None:
    """Pad 479 zeros, centred STFT, drop the last frame, log10, clamp to max-8, (x+4)/4: computed by hand."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(5_000) * 0.1).astype(np.float32)
    padded = np.concatenate([samples, np.zeros(audio.PAD_SAMPLES, dtype=np.float32)])
    centred = np.pad(padded, audio.N_FFT // 2, mode="reflect")
    window = np.hanning(audio.N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window
    n_frames = 1 + (len(centred) - audio.N_FFT) // audio.HOP_LENGTH
    frames = np.stack(
        [centred[i * audio.HOP_LENGTH : i * audio.HOP_LENGTH + audio.N_FFT] for i in range(n_frames)]
    )
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (frames, freqs)
    filters = _slaney_filters()
    mel = (power[:-1] @ filters).T
    logs = np.log10(np.maximum(mel, 1e-10))
    expected = (np.maximum(logs, logs.max() - 8.0) + 4.0) / 4.0
    ours = audio.log_mel(torch.from_numpy(samples)).numpy()
    assert ours.shape == expected.shape == (audio.N_MELS, audio.num_mel_frames(len(samples)))
    assert np.abs(ours - expected).max() < 1e-4


def test_config_reads_a_released_style_config_json(tmp_path: Path) -> None:
    """The released config.json layout (sub-configs as dicts, auto_map, extra encoder keys) parses as ours."""
    released = {
        "architectures": [ARCHITECTURE],
        "model_type": "step_audio_2",
        "auto_map": {"AutoConfig": "configuration_step_audio_2.StepAudio2Config"},
        "torch_dtype": "bfloat16",
        "text_config": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 16384,
            "vocab_size": 158_720,
            "rope_theta": 1_000_000.0,
        },
        "audio_encoder_config": {
            "n_mels": 128,
            "n_audio_ctx": 1500,
            "n_audio_state": 1280,
            "n_audio_head": 20,
            "n_audio_layer": 32,
            "n_codebook_size": 4096,
            "llm_dim": 3584,
            "kernel_size": 3,
            "adapter_stride": 2,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(released))
    config = StepAudio2Config.from_pretrained(tmp_path)
    text, enc = config.text_config, config.audio_encoder_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads) == (3584, 28, 4)
    assert text.hidden_size // text.num_attention_heads == 128
    assert text.vocab_size == 158_720 and text.dtype == torch.bfloat16
    assert (enc.n_audio_state, enc.n_audio_layer, enc.llm_dim, enc.adapter_hidden_size) == (
        1280,
        32,
        3584,
        2048,
    )
