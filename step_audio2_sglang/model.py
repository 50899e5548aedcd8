"""``StepAudio2ForCausalLM`` for SGLang: a Qwen2 LLM from SGLang's own layers plus the audio encoder and adapter.

Prefill embeds the prompt with the LLM's token embedding and replaces the ``<audio_patch>`` positions with the
adapter's output through SGLang's `general_mm_embed_routine`; decode steps are plain Qwen2. Parameter names match
the checkpoint (``model.*``, ``lm_head.weight``, ``encoder.*``, ``adapter.*``), with q/k/v and gate/up fused into
SGLang's ``qkv_proj`` / ``gate_up_proj`` by `load_weights`.

Imported only inside SGLang processes (by `step_audio2_sglang.register`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead
from sglang.srt.managers.mm_utils import general_mm_embed_routine, pad_mm_tokens
from sglang.srt.managers.schedule_batch import Modality, MultimodalDataItem, MultimodalInputs
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.models.qwen2 import Qwen2Model
from sglang.srt.utils import add_prefix
from torch import nn

from step_audio2_sglang.config import StepAudio2Config
from step_audio2_sglang.encoder import AudioAdapter, AudioEncoder, embed_blocks
from step_audio2_sglang.weights import map_checkpoint_key

logger = logging.getLogger(__name__)


class StepAudio2ForCausalLM(nn.Module):
    """Step-Audio-2 (mini: Qwen2-7B-style LLM, Whisper-large-style encoder) for SGLang."""

    def __init__(
        self, config: StepAudio2Config, quant_config: QuantizationConfig | None = None, prefix: str = ""
    ) -> None:
        super().__init__()
        text: Any = config.text_config
        audio: Any = config.audio_encoder_config
        if audio.llm_dim != text.hidden_size:
            raise ValueError(f"audio adapter width {audio.llm_dim} != LLM hidden size {text.hidden_size}")
        self.config = config
        self.quant_config = quant_config
        self.tie_word_embeddings = bool(getattr(text, "tie_word_embeddings", False))
        self.model = Qwen2Model(text, quant_config=quant_config, prefix=add_prefix("model", prefix))
        if self.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                text.vocab_size,
                text.hidden_size,
                quant_config=quant_config,
                prefix=add_prefix("lm_head", prefix),
            )
        self.encoder = AudioEncoder(
            audio.n_mels, audio.n_audio_ctx, audio.n_audio_state, audio.n_audio_head, audio.n_audio_layer
        )
        self.adapter = AudioAdapter(
            audio.n_audio_state,
            audio.llm_dim,
            audio.kernel_size,
            audio.adapter_stride,
            getattr(audio, "adapter_hidden_size", 2048),
        )
        self.logits_processor = LogitsProcessor(text)

    def pad_input_ids(self, input_ids: Any, mm_inputs: MultimodalInputs) -> Any:
        """Replace each audio block's patch run with its pad value (radix-cache key of the audio)."""
        return pad_mm_tokens(input_ids, mm_inputs)

    def get_input_embeddings(self) -> nn.Module:
        """The LLM's token embedding (used by `general_mm_embed_routine`)."""
        embedding: nn.Module = self.model.embed_tokens
        return embedding

    def get_audio_feature(self, items: list[MultimodalDataItem]) -> torch.Tensor:
        """Embed audio blocks: each item holds one (1, n_mels, T) mel block → (sum of N_i, hidden)."""
        mels = [item.feature.reshape(item.feature.shape[-2], item.feature.shape[-1]) for item in items]
        return embed_blocks(self.encoder, self.adapter, mels)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch, **kwargs: Any
    ) -> Any:
        """One prefill or decode step; returns SGLang's logits output."""
        hidden_states = general_mm_embed_routine(
            input_ids=input_ids,
            forward_batch=forward_batch,
            language_model=self.model,
            data_embedding_funcs={Modality.AUDIO: self.get_audio_feature},
            positions=positions,
        )
        return self.logits_processor(input_ids, hidden_states, self.lm_head, forward_batch)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load a Step-Audio-2 checkpoint; unknown or missing tensors are errors, never silently ignored."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            target = map_checkpoint_key(name, tie_word_embeddings=self.tie_word_embeddings)
            if target is None:
                continue
            if target.param not in params:
                raise KeyError(
                    f"checkpoint tensor {name!r} has no parameter {target.param!r} in StepAudio2ForCausalLM"
                )
            param = params[target.param]
            if target.shard is None:
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            else:
                param.weight_loader(param, tensor, target.shard)  # type: ignore[attr-defined]
            loaded.add(target.param)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} Step-Audio-2 parameters, e.g. {missing[:5]}")
        logger.info("loaded %d Step-Audio-2 parameters", len(loaded))
        return loaded


EntryClass = StepAudio2ForCausalLM
