"""Reference greedy decoding of the tiny Step-Audio-2 with transformers + the plugin's pure audio modules.

Same weights as the SGLang Engine loads (``model.safetensors`` of `tests.support.sglang.tiny_checkpoint`), same prompt
(rebuilt with our `PromptBuilder`), audio embeddings placed on the ``<audio_patch>`` positions by hand. Agreement
with SGLang's greedy ids shows that the plugin loads the released key names into the right fused layers and that
SGLang puts the audio embeddings where they belong.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM

from realtime.backends.base import GenerationInput
from realtime.backends.sglang.prompt import PromptBuilder
from realtime.backends.sglang.vocab import ModelVocab
from step_audio2_sglang import audio
from step_audio2_sglang.encoder import embed_blocks
from tests.support.sglang.tiny_checkpoint import (
    WEIGHTS_FILE,
    TinyCheckpoint,
    tiny_audio_modules,
    tiny_text_config,
)

AUDIO_PREFIXES = ("encoder.", "adapter.")


def _load(checkpoint: TinyCheckpoint) -> tuple[Qwen2ForCausalLM, torch.nn.Module, torch.nn.Module]:
    tensors = load_file(str(checkpoint.path / WEIGHTS_FILE))
    llm = Qwen2ForCausalLM(tiny_text_config(checkpoint.layout)).eval()
    llm.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(AUDIO_PREFIXES)}, strict=True)
    encoder, adapter = tiny_audio_modules()
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")})
    adapter.load_state_dict({k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")})
    return llm, encoder.eval(), adapter.eval()


@torch.no_grad()
def reference_greedy(checkpoint: TinyCheckpoint, request: GenerationInput, steps: int) -> list[int]:
    """Greedy ids for ``request`` (prompt built exactly as our backends build it)."""
    vocab = ModelVocab.from_model_dir(checkpoint.path)
    prompt = PromptBuilder(vocab.layout, vocab.codec).build(request)
    layout = checkpoint.layout
    placeholder = audio.PlaceholderIds(layout.audio_start, layout.audio_patch, layout.audio_end)
    clips = [sf.read(io.BytesIO(block.wav), dtype="float32")[0] for block in prompt.audio]
    mels = [m for clip in clips for m in audio.clip_features(torch.from_numpy(np.ascontiguousarray(clip)))]
    counts = [
        [audio.num_patches(m.shape[-1]) for m in audio.clip_features(torch.from_numpy(c))] for c in clips
    ]
    ids = audio.expand_placeholders(list(prompt.input_ids), counts, placeholder)
    llm, encoder, adapter = _load(checkpoint)
    embeds = llm.get_input_embeddings()(torch.tensor(ids))
    if mels:
        positions = torch.tensor(ids) == layout.audio_patch
        embeds[positions] = embed_blocks(encoder, adapter, mels).to(embeds.dtype)
    out: list[int] = []
    for _ in range(steps):
        logits = llm(inputs_embeds=embeds.unsqueeze(0)).logits[0, -1]
        token = int(logits.argmax())
        out.append(token)
        embeds = torch.cat([embeds, llm.get_input_embeddings()(torch.tensor([token]))])
    return out
