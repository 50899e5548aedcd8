"""Conversation -> Step-Audio-2 prompt ids plus the user audio SGLang needs (docs/SGLANG.md §3, §4).

The Step "BOT/EOT" dialect, one turn each::

    <|BOT|>system\\n{instructions}<|EOT|>                                    (TTS: read-aloud prompt + style)
    <|BOT|>tool_json_schemas\\n{tools as JSON}<|EOT|>                         when the session has tools
    <|BOT|>human\\n{text}<audio_start><audio_patch><audio_end>...<|EOT|>      one placeholder per 25 s block
    <|BOT|>assistant\\n<tts_start>{raw output ids of the earlier spoken answer}<|EOT|>
    <|BOT|>input\\n{tool output}<|EOT|>
    <|BOT|>assistant\\n<tts_start>                                           prefill, spoken reply
    <|BOT|>assistant\\n                                                      prefill, text-only reply

The tools turn arrives as a ``system`` `PromptTurn` named `TOOL_SCHEMAS_ROLE` (the first turn, see
realtime/session/tool_calls.py); a tool result is a ``tool`` turn, written as StepFun's ``input`` turn.

Each audio placeholder is a single ``<audio_patch>``: the model's multimodal processor inside SGLang expands
it to `audio_patch_count` patches for the matching ``audio_data`` entry (sent in the same order), so SGLang
reports ``prompt_tokens == Prompt.expected_prompt_tokens``. The SGLang backends compare the two to detect
audio that SGLang dropped silently.

Text between special tokens is encoded as one string (as a whole-prompt tokenisation would split it), and
special ids are inserted by id, never parsed out of text.
"""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from realtime.audio import resample_pcm16
from realtime.backends.base import (
    READ_ALOUD_INSTRUCTION,
    TOOL_SCHEMAS_ROLE,
    GenerationInput,
    PromptTurn,
    TextCodec,
)
from step_audio2_sglang import placeholders
from streaming_parser import VocabLayout

# Audio front end of Step-Audio-2 (docs/SGLANG.md §4.1): 16 kHz mono in blocks of at most 25 s. The
# placeholder arithmetic is the plugin's own torch-free module: one formula for SGLang and for us.
MODEL_SAMPLE_RATE = placeholders.SAMPLE_RATE
AUDIO_BLOCK_SAMPLES = placeholders.BLOCK_SAMPLES

PCM16_BYTES = 2
WAV_MIME = "audio/wav"

# OpenAI role -> Step-Audio-2 role name (docs/SGLANG.md §3.1; tool results use StepFun's ``input`` turn).
ROLE_NAMES: dict[str, str] = {"system": "system", "user": "human", "assistant": "assistant", "tool": "input"}
ASSISTANT_ROLE = "assistant"


def audio_patch_count(num_samples: int) -> int:
    """Number of ``<audio_patch>`` positions SGLang expands one placeholder to, for one <= 25 s clip."""
    if num_samples <= 0:
        raise ValueError("an audio block needs at least one sample")
    return placeholders.num_patches(placeholders.num_mel_frames(num_samples))


@dataclass(frozen=True)
class AudioBlock:
    """One <= 25 s piece of user speech, sent as one ``audio_data`` entry.

    Attributes:
        wav: a complete 16 kHz mono PCM16 WAV file.
        num_samples: samples in the clip (what SGLang's processor sees after decoding the WAV).
    """

    wav: bytes
    num_samples: int

    @property
    def patch_count(self) -> int:
        """Placeholder expansion of this block inside SGLang."""
        return audio_patch_count(self.num_samples)

    def data_uri(self) -> str:
        """``data:audio/wav;base64,...`` as SGLang's ``load_audio`` accepts it."""
        return f"data:{WAV_MIME};base64,{base64.b64encode(self.wav).decode('ascii')}"


@dataclass(frozen=True)
class Prompt:
    """A built prompt.

    Attributes:
        input_ids: the prompt ids with one ``<audio_patch>`` per audio block.
        audio: the audio blocks, in placeholder order.
        starts_in_speech: True when the prompt ends with ``<tts_start>`` (the parser starts inside speech).
    """

    input_ids: tuple[int, ...]
    audio: tuple[AudioBlock, ...] = ()
    starts_in_speech: bool = True

    @property
    def expected_prompt_tokens(self) -> int:
        """The prompt length SGLang should report once every placeholder is expanded."""
        return len(self.input_ids) + sum(block.patch_count - 1 for block in self.audio)

    def audio_data(self) -> list[str]:
        """The ``audio_data`` field of a ``/generate`` request (empty when there is no audio)."""
        return [block.data_uri() for block in self.audio]


def pcm16_to_model_rate(pcm16: bytes, sample_rate: int) -> np.ndarray:
    """Little-endian PCM16 mono at ``sample_rate`` -> int16 samples at 16 kHz (the project's one resampler,
    `realtime.audio.resample_pcm16`).

    Returns:
        int16 array, shape [samples].
    """
    if len(pcm16) % PCM16_BYTES:
        raise ValueError("PCM16 audio must have an even number of bytes")
    return np.frombuffer(resample_pcm16(pcm16, sample_rate, MODEL_SAMPLE_RATE), dtype="<i2").astype(np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE) -> bytes:
    """int16 mono samples -> a PCM16 WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(PCM16_BYTES)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def model_rate_samples(num_bytes: int, sample_rate: int) -> int:
    """Samples at 16 kHz that `pcm16_to_model_rate` makes of ``num_bytes`` of PCM16 at ``sample_rate``
    (torchaudio's resampler returns ``ceil(n * 16000 / rate)`` samples)."""
    samples = num_bytes // PCM16_BYTES
    if sample_rate == MODEL_SAMPLE_RATE or samples == 0:
        return samples
    return -(-samples * MODEL_SAMPLE_RATE // sample_rate)


def block_sizes(num_samples: int) -> list[int]:
    """Sample counts of the <= 25 s blocks `audio_blocks` cuts ``num_samples`` 16 kHz samples into."""
    full, rest = divmod(num_samples, AUDIO_BLOCK_SAMPLES)
    return [AUDIO_BLOCK_SAMPLES] * full + ([rest] if rest else [])


def audio_blocks(pcm16: bytes, sample_rate: int) -> tuple[AudioBlock, ...]:
    """Split user speech into <= 25 s 16 kHz WAV blocks (the reference splits the same way)."""
    samples = pcm16_to_model_rate(pcm16, sample_rate)
    return tuple(
        AudioBlock(wav=wav_bytes(block), num_samples=int(block.size))
        for block in (
            samples[start : start + AUDIO_BLOCK_SAMPLES]
            for start in range(0, samples.size, AUDIO_BLOCK_SAMPLES)
        )
    )


class PromptBuilder:
    """Builds `Prompt`s for one model. Pure; safe to call from any thread (the backends use a worker thread,
    since resampling and WAV encoding of long user audio should not run on the event loop)."""

    def __init__(self, layout: VocabLayout, codec: TextCodec) -> None:
        self._layout = layout
        self._codec = codec

    def build(self, request: GenerationInput) -> Prompt:
        """The prompt for ``request``: instructions as the system turn, the history, then the prefill."""
        audio: list[AudioBlock] = []

        def blocks(turn: PromptTurn) -> int:
            assert turn.audio_pcm16 is not None
            new = audio_blocks(turn.audio_pcm16, turn.audio_sample_rate)
            audio.extend(new)
            return len(new)

        ids = self._assemble(request, blocks)
        return Prompt(input_ids=ids, audio=tuple(audio), starts_in_speech=request.speak)

    def count(self, request: GenerationInput) -> int:
        """``build(request).expected_prompt_tokens`` without resampling or encoding audio: cheap enough to
        call several times per response (`realtime.backends.context.fit`)."""
        patches = 0

        def blocks(turn: PromptTurn) -> int:
            nonlocal patches
            assert turn.audio_pcm16 is not None
            sizes = block_sizes(model_rate_samples(len(turn.audio_pcm16), turn.audio_sample_rate))
            patches += sum(audio_patch_count(size) - 1 for size in sizes)
            return len(sizes)

        return len(self._assemble(request, blocks)) + patches

    def _assemble(self, request: GenerationInput, blocks: Callable[[PromptTurn], int]) -> tuple[int, ...]:
        pieces = _Pieces(self._codec)
        system = system_text(request)
        if system:
            self._open(pieces, "system")
            pieces.text(system)
            pieces.special(self._layout.eot)
        for turn in request.turns:
            self._turn(pieces, turn, blocks)
        self._open(pieces, ASSISTANT_ROLE)
        if request.speak:
            pieces.special(self._layout.tts_start)
        return pieces.ids()

    def _open(self, pieces: _Pieces, role: str) -> None:
        pieces.special(self._layout.bot)
        pieces.text(f"{role}\n")

    def _turn(self, pieces: _Pieces, turn: PromptTurn, blocks: Callable[[PromptTurn], int]) -> None:
        """Append one turn; ``blocks`` handles its audio and returns the number of 25 s blocks."""
        tools = turn.role == "system" and turn.name == TOOL_SCHEMAS_ROLE
        self._open(pieces, TOOL_SCHEMAS_ROLE if tools else ROLE_NAMES[turn.role])
        if turn.role == ASSISTANT_ROLE and turn.output_ids is not None:
            # Re-insert the answer exactly as generated: <tts_start> was the prefill, not an output id.
            if turn.spoken:
                pieces.special(self._layout.tts_start)
            pieces.raw(_without_trailing(turn.output_ids, self._layout.eot))
        else:
            if turn.text:
                pieces.text(turn.text)
            if turn.audio_pcm16 and turn.role != ASSISTANT_ROLE:
                for _ in range(blocks(turn)):
                    pieces.special(self._layout.audio_start)
                    pieces.special(self._layout.audio_patch)
                    pieces.special(self._layout.audio_end)
        pieces.special(self._layout.eot)


def system_text(request: GenerationInput) -> str:
    """The system turn: the instructions, or for text-to-speech the read-aloud prompt then the style notes."""
    if not request.read_aloud:
        return request.instructions
    style = request.instructions.strip()
    return READ_ALOUD_INSTRUCTION + ("\n" + style if style else "")


def _without_trailing(ids: Sequence[int], token_id: int) -> Sequence[int]:
    """Drop one trailing stop id: SGLang returns the matched ``<|EOT|>`` inside ``output_ids``."""
    return ids[:-1] if ids and ids[-1] == token_id else ids


class _Pieces:
    """Accumulates prompt ids; adjacent text is encoded together so tokenisation matches the whole string."""

    def __init__(self, codec: TextCodec) -> None:
        self._codec = codec
        self._ids: list[int] = []
        self._pending_text: list[str] = []

    def text(self, text: str) -> None:
        self._pending_text.append(text)

    def special(self, token_id: int) -> None:
        self._flush()
        self._ids.append(token_id)

    def raw(self, ids: Sequence[int]) -> None:
        self._flush()
        self._ids.extend(ids)

    def ids(self) -> tuple[int, ...]:
        self._flush()
        return tuple(self._ids)

    def _flush(self) -> None:
        if self._pending_text:
            self._ids.extend(self._codec.encode("".join(self._pending_text)))
            self._pending_text.clear()
