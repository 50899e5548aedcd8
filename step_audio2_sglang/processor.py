"""SGLang multimodal processor for Step-Audio-2: audio clips in, expanded prompt ids and per-block items out.

Runs in SGLang's tokenizer process. For each request with ``audio_data`` it

1. takes the prompt ids (``prefer_tokenized_input``: the ids the client sent, never a decode/re-encode round trip)
   or tokenises a text prompt;
2. checks that the prompt holds exactly one ``<audio_start><audio_patch><audio_end>`` per clip (a mismatch is a
   clear request error, never a silent drop);
3. loads every clip at 16 kHz mono with SGLang's loader, cuts it into 25 s blocks and computes log-mel features
   in a worker thread (`step_audio2_sglang.audio`);
4. expands each placeholder into one ``<audio_start> <audio_patch>×N <audio_end>`` span per block and returns
   one `MultimodalDataItem` per block whose offsets cover that block's patch run.

The model (`step_audio2_sglang.model`) embeds each item's mel block into exactly N vectors.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import numpy as np
import torch
from sglang.srt.managers.schedule_batch import Modality, MultimodalDataItem, MultimodalProcessorOutput
from sglang.srt.multimodal.processors.base_processor import BaseMultimodalProcessor, MultimodalSpecialTokens

from step_audio2_sglang.audio import (
    SAMPLE_RATE,
    PlaceholderIds,
    clip_features,
    expand_placeholders,
    num_patches,
    patch_runs,
)
from step_audio2_sglang.model import StepAudio2ForCausalLM

AUDIO_START = "<audio_start>"
AUDIO_PATCH = "<audio_patch>"
AUDIO_END = "<audio_end>"
PLACEHOLDER = AUDIO_START + AUDIO_PATCH + AUDIO_END
PLACEHOLDER_REGEX = re.compile(
    re.escape(AUDIO_START) + f"(?:{re.escape(AUDIO_PATCH)})+" + re.escape(AUDIO_END)
)


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if not isinstance(token_id, int) or token_id < 0 or (unk is not None and token_id == unk):
        raise ValueError(f"Step-Audio-2 tokenizer has no {token} token: wrong tokenizer for this model")
    return token_id


def _count_placeholders(ids: list[int], placeholder: PlaceholderIds) -> int:
    triple = [placeholder.audio_start, placeholder.audio_patch, placeholder.audio_end]
    return sum(1 for i in range(len(ids) - 2) if ids[i : i + 3] == triple)


def _featurize(clips: list[np.ndarray]) -> tuple[list[list[torch.Tensor]], list[list[int]]]:
    """Mel blocks and their placeholder counts for every clip (CPU work, run off the event loop)."""
    mels: list[list[torch.Tensor]] = []
    counts: list[list[int]] = []
    for index, clip in enumerate(clips):
        samples = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)).reshape(-1)
        if samples.numel() == 0:
            raise ValueError(f"audio clip {index} is empty")
        blocks = clip_features(samples)
        mels.append(blocks)
        counts.append([num_patches(block.shape[-1]) for block in blocks])
    return mels, counts


class StepAudio2MultimodalProcessor(BaseMultimodalProcessor):
    """Audio-input processor of `StepAudio2ForCausalLM` (see the module docstring for the steps)."""

    models: ClassVar[list[type]] = [StepAudio2ForCausalLM]
    prefer_tokenized_input = True

    def __init__(self, hf_config: Any, server_args: Any, _processor: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(hf_config, server_args, _processor, *args, **kwargs)
        tokenizer = self._tokenizer
        self.placeholder = PlaceholderIds(
            audio_start=_token_id(tokenizer, AUDIO_START),
            audio_patch=_token_id(tokenizer, AUDIO_PATCH),
            audio_end=_token_id(tokenizer, AUDIO_END),
        )
        self.mm_tokens = MultimodalSpecialTokens(
            audio_token=PLACEHOLDER,
            audio_token_regex=PLACEHOLDER_REGEX,
            audio_token_id=self.placeholder.audio_patch,
        ).build(_processor)

    def _prompt_ids(self, input_text: Any) -> list[int]:
        if isinstance(input_text, list):
            return [int(token_id) for token_id in input_text]
        if isinstance(input_text, str):
            return list(self._tokenizer.encode(input_text, add_special_tokens=False))
        raise ValueError(f"unsupported prompt type {type(input_text).__name__} for Step-Audio-2")

    async def _load_clips(self, audio_data: list[Any]) -> list[np.ndarray]:
        futures = []
        for index, item in enumerate(audio_data):
            if self._is_preprocessed_input(item):
                raise ValueError(f"audio item {index}: preprocessed audio is not supported by Step-Audio-2")
            futures.append(
                self.io_executor.submit(self._load_single_item, item, Modality.AUDIO, None, SAMPLE_RATE)
            )
        return [np.asarray(await asyncio.wrap_future(future), dtype=np.float32) for future in futures]

    async def process_mm_data_async(
        self,
        image_data: Any = None,
        audio_data: Any = None,
        input_text: Any = None,
        request_obj: Any = None,
        **kwargs: Any,
    ) -> MultimodalProcessorOutput | None:
        """Expand the audio placeholders of one request and build its per-block multimodal items."""
        if image_data or getattr(request_obj, "video_data", None):
            raise ValueError("Step-Audio-2 accepts audio input only (no images or video)")
        if not audio_data:
            return None
        clips_in = audio_data if isinstance(audio_data, list) else [audio_data]
        ids = self._prompt_ids(input_text)
        found = _count_placeholders(ids, self.placeholder)
        if found != len(clips_in):
            raise ValueError(
                f"prompt has {found} audio placeholders ({PLACEHOLDER}) but {len(clips_in)} audio clips were given"
            )
        clips = await self._load_clips(clips_in)
        mels, counts = await asyncio.to_thread(_featurize, clips)
        expanded = expand_placeholders(ids, counts, self.placeholder)
        runs = patch_runs(expanded, self.placeholder.audio_patch)
        blocks = [block for clip in mels for block in clip]
        if len(runs) != len(blocks):
            raise ValueError(f"{len(runs)} audio patch runs for {len(blocks)} audio blocks: malformed prompt")
        items = [
            MultimodalDataItem(modality=Modality.AUDIO, feature=block.unsqueeze(0), offsets=[run])
            for block, run in zip(blocks, runs, strict=True)
        ]
        items = self._finalize_mm_items(items, images=[])
        return MultimodalProcessorOutput(
            mm_items=items,
            input_ids=expanded,
            audio_start_id=self.placeholder.audio_start,
            audio_token_id=self.placeholder.audio_patch,
            audio_end_id=self.placeholder.audio_end,
        )
