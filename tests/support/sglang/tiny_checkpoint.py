"""A tiny Step-Audio-2 checkpoint directory for SGLang tests: config + tokenizer, no weights.

SGLang's ``--load-format dummy`` fills the weights with random values, so the directory holds only:

- ``config.json``: ``StepAudio2ForCausalLM`` with a tiny Qwen2 ``text_config`` (hidden 64, 2 layers) but the
  REAL vocabulary size 158720, and a tiny ``audio_encoder_config`` (128 mels as in the real front end).
- ``tokenizer.json`` / ``tokenizer_config.json``: a byte-level BPE over the 256 byte symbols (no merges: every
  byte is one token), filler tokens up to id 151642, then added special tokens at exactly the ids of
  `streaming_parser.VocabLayout.default()` (control tokens, ``<audio_0>`` .. ``<audio_6561>``) and filler
  specials up to the vocabulary size. Decoding ``<audio_start><audio_patch><audio_end>`` round-trips exactly,
  which SGLang needs to find the audio placeholder in a prompt given as ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from streaming_parser import VocabLayout

FIRST_SPECIAL_ID = 151_643  # Qwen2's <|endoftext|>: the first added token of the real vocabulary
QWEN_SPECIALS = {151_643: "<|endoftext|>", 151_644: "<|im_start|>", 151_645: "<|im_end|>"}
BYTE_SYMBOLS = 256
MAX_POSITIONS = 4096

TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 158_720,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": MAX_POSITIONS,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": False,
}
TINY_AUDIO_CONFIG: dict[str, Any] = {
    "n_mels": 128,
    "n_audio_ctx": 1500,
    "n_audio_state": 32,
    "n_audio_head": 2,
    "n_audio_layer": 1,
    "llm_dim": 64,
    "kernel_size": 3,
    "adapter_stride": 2,
    "adapter_hidden_size": 64,
}


@dataclass(frozen=True)
class TinyCheckpoint:
    """A written tiny checkpoint: its directory and the vocabulary layout its tokenizer uses."""

    path: Path
    layout: VocabLayout


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins the byte-level pre-tokenizer maps bytes to (GPT-2's table), in byte order."""
    return sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of_symbol)


def _byte_of_symbol(symbol: str) -> int:
    decoder = decoders.ByteLevel()
    raw = decoder.decode([symbol]).encode("utf-8", errors="surrogateescape")
    # Symbols of bytes >= 0x80 decode to invalid UTF-8 replaced by U+FFFD; order them by code point instead.
    return raw[0] if len(raw) == 1 else BYTE_SYMBOLS + ord(symbol)


def special_token_names(layout: VocabLayout) -> list[str]:
    """Names of ids FIRST_SPECIAL_ID .. vocab_size - 1, in id order."""
    names = []
    for token_id in range(FIRST_SPECIAL_ID, layout.vocab_size):
        name = QWEN_SPECIALS.get(token_id) or layout.token_name(token_id) or f"<|extra_{token_id}|>"
        names.append(name)
    return names


def build_tokenizer(layout: VocabLayout) -> Tokenizer:
    """The tiny byte-level tokenizer whose special tokens sit at ``layout``'s ids.

    Every id has a vocabulary entry. Only the Qwen specials and Step-Audio-2's control tokens (ids below
    ``<audio_0>``) are *added* special tokens, so text holding them tokenises to their ids; ``<audio_N>`` and
    the filler ids are plain vocabulary entries, which keeps transformers' tokenizer load fast (SGLang loads
    the tokenizer several times at start) while every id still decodes to its name.
    """
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    for token_id in range(BYTE_SYMBOLS, FIRST_SPECIAL_ID):
        vocab[f"<unused_{token_id}>"] = token_id
    names = special_token_names(layout)
    for token_id, name in zip(range(FIRST_SPECIAL_ID, layout.vocab_size), names, strict=True):
        vocab[name] = token_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    controls = names[: layout.audio_first - FIRST_SPECIAL_ID]
    tokenizer.add_special_tokens(controls)
    if tokenizer.get_vocab_size() != layout.vocab_size:
        raise RuntimeError(
            f"tiny tokenizer has {tokenizer.get_vocab_size()} ids, expected {layout.vocab_size}"
        )
    for token_id, name in zip(range(FIRST_SPECIAL_ID, layout.vocab_size), names, strict=True):
        if tokenizer.token_to_id(name) != token_id:
            raise RuntimeError(f"{name} landed at {tokenizer.token_to_id(name)}, expected {token_id}")
    return tokenizer


def write_tiny_checkpoint(out: Path, layout: VocabLayout | None = None) -> TinyCheckpoint:
    """Write config.json, generation_config.json and tokenizer files for a tiny Step-Audio-2 into ``out``."""
    layout = layout or VocabLayout.default()
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["StepAudio2ForCausalLM"],
        "model_type": "step_audio_2",
        "torch_dtype": "float32",
        "text_config": {**TINY_TEXT_CONFIG, "vocab_size": layout.vocab_size},
        "audio_encoder_config": TINY_AUDIO_CONFIG,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # Without a generation config SGLang would take its own sampling defaults; make the stop id explicit.
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [layout.eot]}))
    build_tokenizer(layout).save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|EOT|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return TinyCheckpoint(path=out, layout=layout)


WEIGHTS_FILE = "model.safetensors"
# Wider than transformers' default 0.02 so the tiny model's logits are well separated: greedy ids then do not
# hinge on float rounding differences between SGLang's kernels and the reference.
WEIGHT_INIT_STD = 0.2


def tiny_text_config(layout: VocabLayout | None = None) -> Any:
    """The tiny checkpoint's LLM config as a transformers ``Qwen2Config``."""
    from transformers import Qwen2Config

    vocab_size = (layout or VocabLayout.default()).vocab_size
    return Qwen2Config(**{**TINY_TEXT_CONFIG, "vocab_size": vocab_size, "initializer_range": WEIGHT_INIT_STD})


def tiny_audio_modules() -> tuple[Any, Any]:
    """Fresh (encoder, adapter) of the tiny audio config (`step_audio2_sglang.encoder`)."""
    from step_audio2_sglang.encoder import AudioAdapter, AudioEncoder

    cfg = TINY_AUDIO_CONFIG
    encoder = AudioEncoder(
        cfg["n_mels"], cfg["n_audio_ctx"], cfg["n_audio_state"], cfg["n_audio_head"], cfg["n_audio_layer"]
    )
    adapter = AudioAdapter(
        cfg["n_audio_state"],
        cfg["llm_dim"],
        cfg["kernel_size"],
        cfg["adapter_stride"],
        cfg["adapter_hidden_size"],
    )
    return encoder, adapter


def write_tiny_weights(checkpoint: TinyCheckpoint, seed: int = 0) -> Path:
    """Write random weights under the released checkpoint's key names into ``model.safetensors``.

    LLM keys come from transformers' own ``Qwen2ForCausalLM`` (``model.layers.N.self_attn.q_proj.weight`` ...,
    separate q/k/v and gate/up, as in the release); audio keys from our encoder/adapter with the ``encoder.`` /
    ``adapter.`` prefixes of the release. Loading this file exercises the plugin's ``load_weights``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    llm = Qwen2ForCausalLM(tiny_text_config(checkpoint.layout))
    encoder, adapter = tiny_audio_modules()
    tensors = {name: tensor.contiguous() for name, tensor in llm.state_dict().items()}
    tensors |= {f"encoder.{name}": t.contiguous() for name, t in encoder.state_dict().items()}
    tensors |= {f"adapter.{name}": t.contiguous() for name, t in adapter.state_dict().items()}
    path = checkpoint.path / WEIGHTS_FILE
    save_file(tensors, str(path))
    return path
