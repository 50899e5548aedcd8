"""The served model's tokenizer and id layout, as both SGLang backends need them.

The prompt builder, the parser and the transcript detokeniser must use the tokenizer of the model SGLang
serves. It is read from a local model folder (``--model-dir``), or, when none is given, from the
``tokenizer_path`` that SGLang reports if that folder exists on this machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.backends.base import BackendError, GenerationInput, TextCodec
from realtime.backends.sglang.prompt import Prompt, PromptBuilder
from realtime.backends.sglang.tokenizer import TokenizerCodec, TokenizerLoadError
from streaming_parser import VocabError, VocabLayout


@dataclass(frozen=True)
class ModelVocab:
    """Tokenizer plus the id layout derived from the same files. Immutable, thread-safe."""

    layout: VocabLayout
    codec: TokenizerCodec

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ModelVocab:
        """Load both from one model folder.

        Raises:
            BackendError: ``bad_model_dir`` with the reason (missing tokenizer, wrong special ids).
        """
        path = Path(path).expanduser()
        try:
            return cls(layout=VocabLayout.from_model_dir(path), codec=TokenizerCodec.from_model_dir(path))
        except (VocabError, TokenizerLoadError) as exc:
            raise BackendError("bad_model_dir", f"model directory {path}: {exc}") from exc


def load_model_vocab(model_dir: Path | None, model_info: Mapping[str, Any]) -> ModelVocab:
    """``model_dir``, else the server's local ``tokenizer_path``/``model_path``.

    Raises:
        BackendError: ``bad_model_dir`` when no usable local tokenizer folder is known.
    """
    if model_dir is not None:
        return ModelVocab.from_model_dir(model_dir)
    for key in ("tokenizer_path", "model_path"):
        candidate = model_info.get(key)
        if isinstance(candidate, str) and Path(candidate).expanduser().is_dir():
            return ModelVocab.from_model_dir(Path(candidate).expanduser())
    raise BackendError(
        "bad_model_dir",
        "no local tokenizer: pass --model-dir with the Step-Audio-2 model folder (the server reports "
        f"tokenizer_path={model_info.get('tokenizer_path')!r}, which is not a folder on this machine)",
    )


def model_matches(model_info: Mapping[str, Any], expected: str) -> bool:
    """Whether SGLang's ``/model_info`` names ``expected`` (full path, served name, or last path part)."""
    wanted = expected.rstrip("/")
    wanted_name = Path(wanted).name
    for key in ("served_model_name", "model_path", "tokenizer_path"):
        value = model_info.get(key)
        if not isinstance(value, str) or not value:
            continue
        value = value.rstrip("/")
        if value == wanted or Path(value).name == wanted_name:
            return True
    return False


class ModelVocabBackend:
    """What both SGLang backends share once `start()` has loaded the served model's `ModelVocab`:
    the `vocab` / `text_codec` / `context_length` properties of the `LLMBackend` protocol, prompt building
    and prompt counting."""

    _vocab: ModelVocab | None = None
    _prompt_builder: PromptBuilder | None = None
    _context_length: int | None = None

    @property
    def context_length(self) -> int:
        """The served model's context length (learnt by `start()`, or the configured override)."""
        if self._context_length is None:
            raise RuntimeError(f"{type(self).__name__}: the context length is known only after start()")
        return self._context_length

    def count_prompt_tokens(self, request: GenerationInput) -> int:
        """The prompt length SGLang will report for ``request`` (audio patches expanded); no audio is decoded."""
        builder = self._prompt_builder
        if builder is None:
            raise BackendError("not_started", "the SGLang backend was used before start()")
        return builder.count(request)

    def _use_context_length(self, tokens: int, source: str) -> None:
        if tokens <= 0:
            raise BackendError("wrong_server", f"{source} reports a context length of {tokens} tokens")
        self._context_length = tokens

    @property
    def vocab(self) -> VocabLayout:
        return self._require_vocab().layout

    @property
    def text_codec(self) -> TextCodec:
        return self._require_vocab().codec

    def _use_vocab(self, vocab: ModelVocab) -> None:
        self._vocab = vocab
        self._prompt_builder = PromptBuilder(vocab.layout, vocab.codec)

    def _require_vocab(self) -> ModelVocab:
        if self._vocab is None:
            raise RuntimeError(f"{type(self).__name__}: the vocabulary is known only after start()")
        return self._vocab

    async def _build(self, request: GenerationInput) -> Prompt:
        builder = self._prompt_builder
        if builder is None:
            raise BackendError("not_started", "the SGLang backend was used before start()")
        if any(turn.audio_pcm16 for turn in request.turns):  # resampling + WAV encoding: off the loop
            return await asyncio.to_thread(builder.build, request)
        return builder.build(request)
