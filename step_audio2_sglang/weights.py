"""Checkpoint key mapping for Step-Audio-2-mini onto SGLang's fused Qwen2 layers. Pure Python.

Checkpoint keys (HF ``StepAudio2ForCausalLM``): ``model.*`` (a Qwen2 backbone with separate q/k/v and gate/up
projections), ``lm_head.weight``, ``encoder.*`` and ``adapter.*``. SGLang's Qwen2 layers fuse q/k/v into
``qkv_proj`` and gate/up into ``gate_up_proj``; each fused parameter's ``weight_loader(param, tensor, shard)``
places one shard.
"""

from __future__ import annotations

from dataclasses import dataclass

# (fused parameter name, checkpoint name, shard id understood by SGLang's weight loaders)
STACKED_PARAMS: tuple[tuple[str, str, str | int], ...] = (
    (".qkv_proj.", ".q_proj.", "q"),
    (".qkv_proj.", ".k_proj.", "k"),
    (".qkv_proj.", ".v_proj.", "v"),
    (".gate_up_proj.", ".gate_proj.", 0),
    (".gate_up_proj.", ".up_proj.", 1),
)
LM_PREFIX = "model."
LM_HEAD = "lm_head.weight"
EMBED_TOKENS = "model.embed_tokens.weight"
# Tensors some exporters save that are recomputed at load time.
SKIPPED_SUBSTRINGS = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


@dataclass(frozen=True)
class WeightTarget:
    """Where a checkpoint tensor goes.

    Attributes:
        param: parameter name in our model (``named_parameters()``).
        shard: shard id for fused parameters (``"q"``/``"k"``/``"v"`` or 0/1), None for a plain copy.
    """

    param: str
    shard: str | int | None = None


def map_checkpoint_key(name: str, *, tie_word_embeddings: bool = False) -> WeightTarget | None:
    """Map one checkpoint key to its target, or None when the tensor is not loaded.

    Only LLM keys (``model.*``) are fused; encoder/adapter keys keep their names (their attention uses
    ``query``/``key``/``value``, so no fused substring can match them by accident, but the prefix check makes
    that explicit).
    """
    if any(part in name for part in SKIPPED_SUBSTRINGS):
        return None
    if tie_word_embeddings and name == LM_HEAD:
        return None  # the head shares the embedding matrix
    if name.startswith(LM_PREFIX):
        for fused, separate, shard in STACKED_PARAMS:
            if separate in name:
                return WeightTarget(name.replace(separate, fused), shard)
    return WeightTarget(name)
