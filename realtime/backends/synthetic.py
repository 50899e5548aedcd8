"""A model-free LLM backend that streams a well-formed Step-Audio-2 TA4 reply at a configurable rate.

It exists so the whole server (parser, detokenizer, Token2Wav worker, protocol) runs and can be measured
without a GPU or model weights: the embedded ``make serve`` default. Its text comes from a small built-in
vocabulary, so transcripts read as words; its audio codes are pseudo-random, deterministic per seed and
prompt. Nothing about it imitates what a real model would say.

For text-to-speech (``GenerationInput.read_aloud``) it speaks the last user turn's text verbatim: that text is
encoded as UTF-8 byte-pair ids (`WordCodec.encode_bytes`), so the transcript equals the input exactly, in any
language, and the audio lasts about as long as reading it would.

Stream shape (docs/SGLANG.md §2.2), for a spoken reply (the prompt ended with ``<tts_start>``):
``[text, a, a, a, a] * k`` where the text slot carries ``<tts_pad>`` once the words run out and the audio
slots carry ``<audio_6561>`` once the codes run out, then ``<tts_end>`` and ``<|EOT|>``. A text-only reply is
the word ids followed by ``<|EOT|>``.

A transcription request (``GenerationInput.purpose == "transcription"``) gets a deterministic stand-in
transcript instead (`SyntheticBackend.transcript_words`): one vocabulary word per 0.4 s of the user audio
(at least one), picked by a generator seeded with the crc32 of the PCM bytes, ended by ``.``; audio whose RMS
is below `SILENCE_RMS` (digital silence, near silence) gives an empty transcript.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from collections.abc import AsyncIterator, Sequence

import numpy as np

from realtime.backends.base import (
    FinishReason,
    GenerationInput,
    PromptTurn,
    TextCodec,
    TokenChunk,
    answer_budget,
)
from realtime.backends.context import ContextLengthExceeded
from streaming_parser import VocabLayout

DEFAULT_TOKENS_PER_SECOND = 80.0  # like a 7B model served by SGLang on one GPU (60-100 tokens/s)
DEFAULT_PREFILL_SECONDS = 0.04  # a short prompt's prefill on a GPU
TA4_AUDIO_PER_TEXT = 4  # audio tokens per text slot in TA4
AUDIO_CODES_PER_WORD = 10  # ~0.4 s of speech per word at 25 codes/s
MIN_REPLY_WORDS = 8
MAX_REPLY_WORDS = 48
WORDS_PER_PROMPT_WORD = 2  # a longer question gets a longer answer
WORDS_PER_AUDIO_SECOND = 2.5  # spoken input: estimate its word count from its duration
AUDIO_PROMPT_TOKENS_PER_SECOND = 12.5  # Step-Audio-2 audio encoder rate, for the reported prompt length
PCM16_BYTES = 2
DEFAULT_CONTEXT_LENGTH = (
    16_384  # declared, in the range of Step-Audio-2-mini (tests lower it to exercise the rule)
)
TURN_OVERHEAD_TOKENS = 3  # <|BOT|>, the role name and <|EOT|>, as in a Step-Audio-2 prompt
SILENCE_RMS = 100.0  # int16 units (-50 dBFS): quieter audio transcribes to nothing
SECONDS_PER_TRANSCRIPT_WORD = 0.4
_BYTE_IDS = 256
_PAIR_IDS = 256 * 256
READ_ALOUD_CODES_PER_CHAR = 2  # ~13 characters a second at 25 codes/s: a natural reading pace

# The built-in reply text. Each sentence is a sequence of vocabulary entries; the vocabulary is every word
# and punctuation mark that occurs here, so the codec can decode any id it emits.
_SENTENCES: tuple[str, ...] = (
    "this is the synthetic backend of the streaming voice server .",
    "the voice you hear comes from random weights , not from a real model .",
    "every word arrives as a token and every sound as a code .",
    "audio is decoded in small chunks and sent the moment it is ready .",
    "point the server at a real model to hear real speech .",
    "the pipeline is working , from tokens to sound .",
    "you can cancel me at any time and i will stop at once .",
    "each reply is made of simple words from a short list .",
    "thank you for testing the realtime server today .",
    "the first chunk is small so that you hear it sooner .",
    "later chunks are longer and stay ahead of playback .",
    "hello , i am a test signal with a friendly transcript .",
)
_PUNCTUATION = frozenset({".", ","})


def _vocabulary() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for sentence in _SENTENCES:
        for word in sentence.split():
            seen.setdefault(word, None)
    return tuple(seen)


class WordCodec(TextCodec):
    """The synthetic backend's tokenizer: one id per vocabulary entry (word or punctuation mark), plus bytes.

    Ids ``0 .. len(words) - 1`` are words; the next 256 ids are single UTF-8 bytes and the 65536 after them
    byte pairs (a byte-level tokenizer's fallback, two bytes a token so that spelled text costs about half the
    tokens a real BPE would need, not four times), used to spell any text exactly; control and audio ids
    render as their token strings (as a real
    tokenizer does); other text ids render as ``<|text_N|>``. Decoding strips the leading space of a first
    word, like SentencePiece, so incremental detokenizers see realistic context effects; an incomplete UTF-8
    sequence decodes to U+FFFD, as with a real byte-level tokenizer.
    """

    def __init__(self, layout: VocabLayout) -> None:
        self.words = _vocabulary()
        self._ids = {word: i for i, word in enumerate(self.words)}
        self._layout = layout
        self.byte_base = len(self.words)  # id of byte 0x00
        self.pair_base = self.byte_base + _BYTE_IDS  # id of the byte pair 0x00 0x00

    def encode_bytes(self, text: str) -> list[int]:
        """Text -> one id per pair of UTF-8 bytes (a last odd byte alone): decodes back to exactly ``text``."""
        data = text.encode("utf-8")
        ids = [self.pair_base + (data[i] << 8 | data[i + 1]) for i in range(0, len(data) - 1, 2)]
        if len(data) % 2:
            ids.append(self.byte_base + data[-1])
        return ids

    def encode(self, text: str) -> list[int]:
        """Words -> ids; words outside the vocabulary map to a stable pseudo-random entry (crc32)."""
        out = []
        for raw in text.lower().replace(".", " . ").replace(",", " , ").split():
            word_id = self._ids.get(raw)
            out.append(word_id if word_id is not None else zlib.crc32(raw.encode()) % len(self.words))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (special ids as token strings)."""
        parts: list[str] = []
        pending = bytearray()  # consecutive byte ids decode together (a character may span several)
        for token_id in ids:
            if self.byte_base <= token_id < self.byte_base + _BYTE_IDS:
                pending.append(token_id - self.byte_base)
                continue
            if self.pair_base <= token_id < self.pair_base + _PAIR_IDS:
                pending += (token_id - self.pair_base).to_bytes(2, "big")
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if 0 <= token_id < len(self.words):
                word = self.words[token_id]
                parts.append(word if word in _PUNCTUATION or not parts else " " + word)
            else:
                name = self._layout.token_name(token_id)
                parts.append(name if name is not None else f"<|text_{token_id}|>")
        if pending:
            parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)


class SyntheticBackend:
    """Streams synthetic TA4 replies; honours ``abort`` and closing the iterator.

    Args:
        tokens_per_second: emission rate after the prefill delay.
        seed: base seed; a reply's codes depend only on it and the prompt.
        prefill_seconds: delay before the first token (a GPU prefill).
        layout: the vocabulary layout (Step-Audio-2 defaults).
        context_length: the declared context length; requests that exceed it are refused like SGLang does.
    """

    def __init__(
        self,
        *,
        tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
        seed: int = 0,
        prefill_seconds: float = DEFAULT_PREFILL_SECONDS,
        layout: VocabLayout | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        if context_length <= 0:
            raise ValueError("context_length must be > 0")
        if tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        if prefill_seconds < 0:
            raise ValueError("prefill_seconds must be >= 0")
        self.tokens_per_second = tokens_per_second
        self.seed = seed
        self.prefill_seconds = prefill_seconds
        self._context_length = context_length
        self._layout = layout or VocabLayout.default()
        self._codec = WordCodec(self._layout)
        self._aborted: set[str] = set()
        self._active: set[str] = set()

    @property
    def name(self) -> str:
        """``synthetic``."""
        return "synthetic"

    @property
    def vocab(self) -> VocabLayout:
        """The Step-Audio-2 default layout."""
        return self._layout

    @property
    def text_codec(self) -> WordCodec:
        """The built-in word codec."""
        return self._codec

    @property
    def context_length(self) -> int:
        """The declared context length."""
        return self._context_length

    def count_prompt_tokens(self, request: GenerationInput) -> int:
        """Prompt length as this backend reports it: word ids, re-inserted output ids, 12.5 tokens per second
        of user audio, and a fixed overhead per turn."""
        count = TURN_OVERHEAD_TOKENS * (len(request.turns) + 1 + bool(request.instructions))
        count += len(self._codec.encode(request.instructions))
        for turn in request.turns:
            count += len(self._codec.encode(turn.text or "")) + len(turn.output_ids or ())
            if turn.audio_pcm16:
                seconds = len(turn.audio_pcm16) / (PCM16_BYTES * turn.audio_sample_rate)
                count += math.ceil(seconds * AUDIO_PROMPT_TOKENS_PER_SECOND)
        return count

    async def start(self) -> None:
        """Nothing to connect to."""

    async def check_reachable(self) -> None:
        """Always reachable: it runs in this process."""

    async def aclose(self) -> None:
        """Abort every active generation."""
        self._aborted |= self._active

    async def abort(self, rid: str) -> None:
        """Stop the generation with this rid at its next token; no-op for unknown or finished rids."""
        if rid in self._active:
            self._aborted.add(rid)

    def reply_ids(self, request: GenerationInput) -> list[int]:
        """The full id sequence this backend streams for ``request`` (deterministic)."""
        lay = self._layout
        if request.purpose == "transcription":
            audio = b"".join(t.audio_pcm16 or b"" for t in request.turns)
            rate = next((t.audio_sample_rate for t in request.turns if t.audio_pcm16), 16_000)
            return [*self._codec.encode(" ".join(self.transcript_words(audio, rate))), lay.eot]
        rng = random.Random(self._seed_for(request))
        if request.read_aloud:
            text = _last_user_text(request.turns)
            text_ids = self._codec.encode_bytes(text)
            n_codes = READ_ALOUD_CODES_PER_CHAR * len(text)
        else:
            words = self._reply_words(request, rng)
            text_ids = self._codec.encode(" ".join(words))
            n_codes = AUDIO_CODES_PER_WORD * sum(1 for w in words if w not in _PUNCTUATION)
        if not request.speak:
            return [*text_ids, lay.eot]
        groups = max(len(text_ids), math.ceil(n_codes / TA4_AUDIO_PER_TEXT))
        ids: list[int] = []
        for g in range(groups):
            ids.append(text_ids[g] if g < len(text_ids) else lay.tts_pad)
            for slot in range(TA4_AUDIO_PER_TEXT):
                index = g * TA4_AUDIO_PER_TEXT + slot
                code = rng.randrange(lay.audio_codes) if index < n_codes else None
                ids.append(lay.audio_token_id(code) if code is not None else lay.audio_pad)
        ids.extend((lay.tts_end, lay.eot))
        return ids

    def transcript_words(self, pcm16: bytes, sample_rate: int) -> list[str]:
        """The stand-in transcript of little-endian PCM16 mono audio, as words (see the module docstring)."""
        samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % PCM16_BYTES], dtype="<i2")
        if samples.size == 0 or float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < SILENCE_RMS:
            return []
        count = max(1, round(samples.size / sample_rate / SECONDS_PER_TRANSCRIPT_WORD))
        rng = random.Random(zlib.crc32(pcm16, self.seed & 0xFFFFFFFF))
        words = [w for w in self._codec.words if w not in _PUNCTUATION]
        return [*(rng.choice(words) for _ in range(count)), "."]

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        """Stream the reply at ``tokens_per_second``; stops early on abort or ``max_new_tokens``.

        Raises:
            ContextLengthExceeded: prompt plus ``max_new_tokens`` exceed the context (SGLang's check).
        """
        prompt_tokens = self.count_prompt_tokens(request)
        limit = answer_budget(request.sampling, prompt_tokens, self._context_length)
        if prompt_tokens >= self._context_length or prompt_tokens + limit > self._context_length:
            raise ContextLengthExceeded(
                f"Requested token count exceeds the model's maximum context length of {self._context_length} "
                f"tokens. You requested a total of {prompt_tokens + limit} tokens: {prompt_tokens} tokens from "
                f"the input messages and {limit} tokens for the completion.",
                prompt_tokens,
            )
        ids = self.reply_ids(request)
        finish = FinishReason.STOP
        if len(ids) > limit:
            ids, finish = ids[:limit], FinishReason.LENGTH
        rid = request.rid
        self._active.add(rid)
        try:
            t0 = time.perf_counter() + self.prefill_seconds
            sent = 0
            while sent < len(ids):
                wait = t0 + sent / self.tokens_per_second - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                # every token whose due time has passed goes out now (a late reader gets bigger chunks)
                elapsed = time.perf_counter() - t0
                due = min(len(ids), max(sent + 1, int(elapsed * self.tokens_per_second) + 1))
                if rid in self._aborted:
                    yield TokenChunk((), FinishReason.ABORT, prompt_tokens, sent)
                    return
                last = due >= len(ids)
                yield TokenChunk(
                    tuple(ids[sent:due]), finish if last else None, prompt_tokens if sent == 0 else None, due
                )
                sent = due
        finally:
            self._active.discard(rid)
            self._aborted.discard(rid)

    def _seed_for(self, request: GenerationInput) -> int:
        text = request.instructions + "\x00" + "\x00".join(t.text or "" for t in request.turns)
        return zlib.crc32(text.encode(), self.seed & 0xFFFFFFFF) ^ len(request.turns)

    def _reply_words(self, request: GenerationInput, rng: random.Random) -> list[str]:
        target = _reply_length(request.turns)
        words: list[str] = []
        while len(words) < target:
            words.extend(rng.choice(_SENTENCES).split())
        return words


def _last_user_text(turns: Sequence[PromptTurn]) -> str:
    for turn in reversed(turns):
        if turn.role == "user":
            return turn.text or ""
    return ""


def _reply_length(turns: Sequence[PromptTurn]) -> int:
    """Target reply length in words from the last user turn (text words, or seconds of speech)."""
    prompt_words = 0
    for turn in reversed(turns):
        if turn.role != "user":
            continue
        if turn.text:
            prompt_words += len(turn.text.split())
        if turn.audio_pcm16:
            seconds = len(turn.audio_pcm16) / (PCM16_BYTES * turn.audio_sample_rate)
            prompt_words += round(seconds * WORDS_PER_AUDIO_SECOND)
        break
    return max(MIN_REPLY_WORDS, min(MAX_REPLY_WORDS, WORDS_PER_PROMPT_WORD * prompt_words))
