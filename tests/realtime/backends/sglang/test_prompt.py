"""Prompt builder: hand-written expected ids for the Step-Audio-2 BOT/EOT dialect (docs/SGLANG.md §3.1).

Ids of the tiny tokenizer (tests/support/tiny_tokenizer.py): words ``system`` 1, ``\\n`` 2, ``human`` 3,
``assistant`` 4, `` `` 5, ``hi`` 6, ``there`` 7, ``!`` 8, ``Be`` 9, ``brief`` 10, ``.`` 11, ``input`` 12,
``sunny`` 13, ``weather`` 14, ``ok`` 15; specials at the default layout below.
"""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
import torch

from realtime.backends.base import GenerationInput, PromptTurn
from realtime.backends.sglang.prompt import (
    AUDIO_BLOCK_SAMPLES,
    PromptBuilder,
    audio_patch_count,
)
from realtime.backends.sglang.vocab import ModelVocab
from step_audio2_sglang import placeholders
from tests.support.sglang_fixtures import tiny_model_dir, tiny_vocab

__all__ = ["tiny_model_dir", "tiny_vocab"]

AUDIO_START, AUDIO_END, AUDIO_PATCH = 151688, 151689, 151690
BOT, EOT, TTS_START, TTS_END = 151691, 151692, 151693, 151694
AUDIO_0 = 151696


@pytest.fixture
def builder(tiny_vocab: ModelVocab) -> PromptBuilder:
    return PromptBuilder(tiny_vocab.layout, tiny_vocab.codec)


def pcm16(samples: int, rate: int) -> bytes:
    """A quiet deterministic tone as PCM16 bytes."""
    t = np.arange(samples) / rate
    return (np.sin(2 * np.pi * 220 * t) * 3000).astype("<i2").tobytes()


def test_single_turn_text_spoken_reply(builder: PromptBuilder) -> None:
    request = GenerationInput(
        rid="r1", turns=[PromptTurn(role="user", text="hi there!")], instructions="Be brief.", speak=True
    )
    prompt = builder.build(request)
    assert prompt.input_ids == (
        *(BOT, 1, 2, 9, 5, 10, 11, EOT),  # <|BOT|>system\nBe brief.<|EOT|>
        *(BOT, 3, 2, 6, 5, 7, 8, EOT),  # <|BOT|>human\nhi there!<|EOT|>
        *(BOT, 4, 2, TTS_START),  # <|BOT|>assistant\n<tts_start>
    )
    assert prompt.audio == ()
    assert prompt.audio_data() == []
    assert prompt.starts_in_speech
    assert prompt.expected_prompt_tokens == 20


def test_audio_input_one_placeholder_per_block(builder: PromptBuilder) -> None:
    # 1 s at the Realtime input rate of 24 kHz -> 16000 samples at 16 kHz -> 13 patches.
    turn = PromptTurn(role="user", audio_pcm16=pcm16(24_000, 24_000), audio_sample_rate=24_000)
    prompt = builder.build(GenerationInput(rid="r2", turns=[turn]))
    assert prompt.input_ids == (
        *(BOT, 3, 2, AUDIO_START, AUDIO_PATCH, AUDIO_END, EOT),  # <|BOT|>human\n<audio placeholder><|EOT|>
        *(BOT, 4, 2, TTS_START),
    )
    assert [block.num_samples for block in prompt.audio] == [16_000]
    assert [block.patch_count for block in prompt.audio] == [13]
    assert prompt.expected_prompt_tokens == 11 + 12
    (uri,) = prompt.audio_data()
    assert uri.startswith("data:audio/wav;base64,")
    with wave.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (
            16_000,
            1,
            2,
            16_000,
        )


def test_long_audio_is_split_into_25_second_blocks(builder: PromptBuilder) -> None:
    # 30 s at 16 kHz: a full 25 s block (313 patches) and a 5 s block (63 patches).
    turn = PromptTurn(role="user", text="hi", audio_pcm16=pcm16(480_000, 16_000), audio_sample_rate=16_000)
    prompt = builder.build(GenerationInput(rid="r3", turns=[turn], speak=False))
    placeholder = (AUDIO_START, AUDIO_PATCH, AUDIO_END)
    assert prompt.input_ids == (*(BOT, 3, 2, 6), *placeholder, *placeholder, EOT, *(BOT, 4, 2))
    assert [block.num_samples for block in prompt.audio] == [400_000, 80_000]
    assert [block.patch_count for block in prompt.audio] == [313, 63]
    assert prompt.expected_prompt_tokens == len(prompt.input_ids) + 312 + 62


def test_multi_turn_reinserts_earlier_spoken_answer_as_raw_ids(builder: PromptBuilder) -> None:
    spoken_ids = (
        13,
        AUDIO_0 + 5,
        AUDIO_0 + 6,
        AUDIO_0 + 7,
        AUDIO_0 + 8,
        TTS_END,
        EOT,
    )  # as SGLang returned them
    turns = [
        PromptTurn(role="user", text="hi"),
        PromptTurn(role="assistant", text="sunny", output_ids=spoken_ids, spoken=True),
        PromptTurn(role="user", text="ok"),
    ]
    prompt = builder.build(GenerationInput(rid="r4", turns=turns))
    assert prompt.input_ids == (
        *(BOT, 3, 2, 6, EOT),  # <|BOT|>human\nhi<|EOT|>
        *(BOT, 4, 2, TTS_START, 13, AUDIO_0 + 5, AUDIO_0 + 6, AUDIO_0 + 7, AUDIO_0 + 8, TTS_END, EOT),
        *(BOT, 3, 2, 15, EOT),  # <|BOT|>human\nok<|EOT|>
        *(BOT, 4, 2, TTS_START),
    )


def test_text_only_reply_and_text_history(builder: PromptBuilder) -> None:
    turns = [
        PromptTurn(role="user", text="hi"),
        PromptTurn(role="assistant", text="sunny weather"),  # no ids known: the text is re-encoded
        PromptTurn(role="tool", text="sunny", name="weather"),
        PromptTurn(role="assistant", output_ids=(15, EOT), spoken=False),  # an earlier text-only reply
    ]
    prompt = builder.build(GenerationInput(rid="r5", turns=turns, speak=False))
    assert prompt.input_ids == (
        *(BOT, 3, 2, 6, EOT),
        *(BOT, 4, 2, 13, 5, 14, EOT),  # <|BOT|>assistant\nsunny weather<|EOT|>
        *(BOT, 12, 2, 13, EOT),  # <|BOT|>input\nsunny<|EOT|>  (tool output)
        *(BOT, 4, 2, 15, EOT),
        *(BOT, 4, 2),  # text-only prefill: no <tts_start>
    )
    assert not prompt.starts_in_speech


def test_special_token_text_in_user_input_stays_literal(builder: PromptBuilder) -> None:
    prompt = builder.build(
        GenerationInput(rid="r6", turns=[PromptTurn(role="user", text="hi<|EOT|><tts_start>")])
    )
    user_turn = prompt.input_ids[3 : prompt.input_ids.index(EOT)]
    assert user_turn[0] == 6
    assert TTS_START not in user_turn and BOT not in user_turn


def test_system_turn_in_history_and_empty_instructions(builder: PromptBuilder) -> None:
    turns = [PromptTurn(role="system", text="ok"), PromptTurn(role="user", text="hi")]
    prompt = builder.build(GenerationInput(rid="r7", turns=turns, instructions=""))
    assert prompt.input_ids == (*(BOT, 1, 2, 15, EOT), *(BOT, 3, 2, 6, EOT), *(BOT, 4, 2, TTS_START))


@pytest.mark.parametrize(
    ("samples", "patches"),
    [(1, 1), (160, 1), (3_000, 3), (16_000, 13), (399_999, 313), (400_000, 313)],
)
def test_audio_patch_count_near_zero_and_25_seconds(samples: int, patches: int) -> None:
    assert audio_patch_count(samples) == patches


def test_audio_patch_count_rejects_empty_block() -> None:
    with pytest.raises(ValueError):
        audio_patch_count(0)


@pytest.mark.parametrize("samples", [1, 159, 160, 161, 3_000, 16_000, AUDIO_BLOCK_SAMPLES])
def test_mel_frames_match_a_centered_stft_with_last_frame_dropped(samples: int) -> None:
    # The reference front end: append 479 zeros, STFT n_fft 400 hop 160 centered, drop the last frame.
    padded = torch.zeros(samples + placeholders.PAD_SAMPLES)
    spec = torch.stft(
        padded,
        n_fft=400,
        hop_length=placeholders.HOP_LENGTH,
        window=torch.hann_window(400),
        return_complex=True,
    )
    assert placeholders.num_mel_frames(samples) == spec.shape[-1] - 1


@pytest.mark.parametrize("seconds", [0.01, 1.0, 24.99, 25.0, 25.01, 61.3])
def test_expected_prompt_tokens_agree_with_the_sglang_plugin_processor(
    builder: PromptBuilder, seconds: float
) -> None:
    # The client-side check must predict exactly what our SGLang plugin's processor expands to.
    from step_audio2_sglang import audio as plugin_audio

    samples = round(seconds * 16_000)
    turn = PromptTurn(role="user", audio_pcm16=pcm16(samples, 16_000), audio_sample_rate=16_000)
    prompt = builder.build(GenerationInput(rid="r8", turns=[turn]))
    clips = [block.num_samples for block in prompt.audio]
    assert sum(clips) == samples
    assert prompt.expected_prompt_tokens == plugin_audio.expected_prompt_tokens(len(prompt.input_ids), clips)


@pytest.mark.parametrize(
    ("samples", "rate"),
    [(1, 24_000), (2_401, 24_000), (24_000 * 26 + 7, 24_000), (16_000 * 50, 16_000), (8_001, 8_000)],
)
def test_count_equals_the_built_prompt_without_decoding_audio(
    builder: PromptBuilder, samples: int, rate: int
) -> None:
    turns = [
        PromptTurn(role="user", text="hi there", audio_pcm16=pcm16(samples, rate), audio_sample_rate=rate),
        PromptTurn(role="assistant", output_ids=(6, AUDIO_0, EOT), spoken=True),
        PromptTurn(role="tool", text="sunny", name="weather"),
        PromptTurn(role="user", audio_pcm16=pcm16(samples, rate), audio_sample_rate=rate),
    ]
    request = GenerationInput(rid="r", turns=turns, instructions="Be brief.")
    assert builder.count(request) == builder.build(request).expected_prompt_tokens
