"""Text <-> ids with the model's own tokenizer, so prompts can be sent as ``input_ids``.

The SGLang backends build the whole Step-Audio-2 prompt as ids (docs/SGLANG.md §3.1,
``--skip-tokenizer-init``) and detokenise transcript ids on our side. Both need the exact tokenizer of the
served model: `TokenizerCodec` loads ``tokenizer.json`` from a model directory with the ``tokenizers`` package
(no ``transformers``).

User text is encoded literally: a user typing ``<|EOT|>`` gets the ids of those characters, never the special
id, so conversation text cannot forge turn boundaries. Special ids are inserted by the prompt builder only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


class TokenizerLoadError(ValueError):
    """The model directory has no usable ``tokenizer.json``."""


class TokenizerCodec:
    """A `realtime.backends.base.TextCodec` over a Hugging Face ``tokenizer.json``.

    Thread-safety: the ``tokenizers`` object is not mutated after construction, so one instance may be used
    from the event loop and from worker threads at once.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        # Literal encoding of special-token strings in text (see module docstring).
        self._tokenizer.encode_special_tokens = True

    @classmethod
    def from_model_dir(cls, path: str | Path) -> TokenizerCodec:
        """Load ``<path>/tokenizer.json``.

        Raises:
            TokenizerLoadError: the file is missing or not a valid tokenizer.
        """
        file = Path(path).expanduser() / TOKENIZER_FILE
        if not file.is_file():
            raise TokenizerLoadError(f"no {TOKENIZER_FILE} in model directory {Path(path)}")
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust side raises a bare Exception subclass
            raise TokenizerLoadError(f"cannot load {file}: {exc}") from exc
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Text to ids, without adding special tokens; special-token strings in ``text`` stay literal."""
        if not text:
            return []
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; special ids render as their token strings (``<tts_start>``, ``<audio_12>``)."""
        if not ids:
            return ""
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=False))

    def token_id(self, token: str) -> int | None:
        """The id of a token string (special or not), or None when the vocabulary lacks it."""
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)
