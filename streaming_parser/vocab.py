"""The Step-Audio-2 token space: which ids are text, audio codes, pads and control tokens.

Layout of the 158 720-entry vocabulary (docs/SGLANG.md §2.1):

    0 .. 151687          text (Qwen2.5-style BPE and its added tokens)
    151688 .. 151695     control tokens (<audio_start>, <audio_patch>, <tts_start>, <tts_end>, ...)
    151696 .. 158256     <audio_0> .. <audio_6560>: the 6561 CosyVoice2 speech codes
    158257               <audio_6561>: the audio pad / end of audio, always dropped
    158258 .. 158719     unused rows of the padded embedding table

Confirmed ids (asserted whenever a tokenizer is read): <audio_start> 151688, <audio_patch> 151690,
<tts_start> 151693, <tts_end> 151694, <audio_0> 151696, <audio_6560> 158256, <audio_6561> 158257.

Unverified ids: <audio_end>, <tts_pad>, <|BOT|>, <|EOT|>. No public source we could read states them. The
defaults below fill the four unassigned slots of the control block 151688..151695, which vLLM-Omni's
``StepAudio2TokenConfig`` documents as "special tokens 151689 - 151695 (reserved)" between text and audio:
<audio_end> takes 151689 next to <audio_start>/<audio_patch> (the three are always used together as
``<audio_start><audio_patch>*N<audio_end>``), <tts_pad> takes 151695 (the vLLM TA4 parser needs it below
<audio_0> because it classifies every id >= <audio_0> as audio), and <|BOT|>/<|EOT|> take 151691/151692.
These defaults only serve the synthetic backend and tests, which are self-consistent with them; with a real
model always build the layout with `VocabLayout.from_model_dir`, which reads the true ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from streaming_parser.errors import ConflictingToken, MissingToken, TokenizerFilesMissing, VocabError

# Confirmed ids (docs/SGLANG.md §2.1), asserted against every tokenizer we read.
TEXT_LIMIT = 151_688
AUDIO_START_ID = 151_688
AUDIO_PATCH_ID = 151_690
TTS_START_ID = 151_693
TTS_END_ID = 151_694
AUDIO_FIRST_ID = 151_696  # <audio_0>
AUDIO_CODES = 6_561  # real speech codes 0..6560
AUDIO_PAD_ID = AUDIO_FIRST_ID + AUDIO_CODES  # <audio_6561> = 158257
VOCAB_SIZE = 158_720

# Unverified defaults (see the module docstring for the reasoning); from_model_dir replaces them.
DEFAULT_AUDIO_END_ID = 151_689
DEFAULT_BOT_ID = 151_691
DEFAULT_EOT_ID = 151_692
DEFAULT_TTS_PAD_ID = 151_695

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
MODEL_CONFIG_JSON = "config.json"

_AUDIO_TOKEN = re.compile(r"<audio_(0|[1-9][0-9]*)>")

# Layout field -> token string, for every control token the layout names.
SPECIAL_TOKENS: dict[str, str] = {
    "audio_start": "<audio_start>",
    "audio_end": "<audio_end>",
    "audio_patch": "<audio_patch>",
    "tts_start": "<tts_start>",
    "tts_end": "<tts_end>",
    "tts_pad": "<tts_pad>",
    "bot": "<|BOT|>",
    "eot": "<|EOT|>",
}

# Token string -> the id every genuine Step-Audio-2 tokenizer must give it.
CONFIRMED_IDS: dict[str, int] = {
    "<audio_start>": AUDIO_START_ID,
    "<audio_patch>": AUDIO_PATCH_ID,
    "<tts_start>": TTS_START_ID,
    "<tts_end>": TTS_END_ID,
    "<audio_0>": AUDIO_FIRST_ID,
    f"<audio_{AUDIO_CODES - 1}>": AUDIO_PAD_ID - 1,
    f"<audio_{AUDIO_CODES}>": AUDIO_PAD_ID,
}


@dataclass(frozen=True)
class VocabLayout:
    """Named ids of the Step-Audio-2 vocabulary; classifies ids by range. Immutable and thread-safe.

    Attributes:
        text_limit: ids below it are text (unless they are one of the named control ids).
        audio_start, audio_end, audio_patch: wrap user audio in the prompt; never expected in output.
        tts_start, tts_end: open and close the spoken (TA4) segment of a reply.
        tts_pad: fills the text slot of a TA4 group once the text has run out; dropped.
        bot, eot: ``<|BOT|>`` and ``<|EOT|>`` start and end a turn; ``eot`` is the stop token.
        audio_first: id of ``<audio_0>``; code ``c`` is id ``audio_first + c``.
        audio_codes: number of real speech codes (6561).
        audio_pad: id of ``<audio_6561>``, the audio pad; dropped.
        vocab_size: rows of the embedding table; ids at or above it are invalid.
        source: where the ids came from (for messages); not part of equality.
    """

    text_limit: int = TEXT_LIMIT
    audio_start: int = AUDIO_START_ID
    audio_end: int = DEFAULT_AUDIO_END_ID
    audio_patch: int = AUDIO_PATCH_ID
    tts_start: int = TTS_START_ID
    tts_end: int = TTS_END_ID
    tts_pad: int = DEFAULT_TTS_PAD_ID
    bot: int = DEFAULT_BOT_ID
    eot: int = DEFAULT_EOT_ID
    audio_first: int = AUDIO_FIRST_ID
    audio_codes: int = AUDIO_CODES
    audio_pad: int = AUDIO_PAD_ID
    vocab_size: int = VOCAB_SIZE
    source: str = field(default="built-in defaults", compare=False)

    UNVERIFIED: ClassVar[tuple[str, ...]] = ("<audio_end>", "<tts_pad>", "<|BOT|>", "<|EOT|>")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "source" and (type(value) is not int or value < 0):
                raise ConflictingToken(
                    f"{f.name} must be a non-negative int, got {value!r}", source=self.source
                )
        if self.audio_first + self.audio_codes != self.audio_pad:
            raise ConflictingToken(
                f"audio pad {self.audio_pad} must follow the last code: {self.audio_first} + {self.audio_codes}",
                source=self.source,
            )
        if self.audio_pad >= self.vocab_size:
            raise ConflictingToken(
                f"vocabulary size {self.vocab_size} does not cover the audio pad {self.audio_pad}",
                source=self.source,
            )
        if self.text_limit > self.audio_first:
            raise ConflictingToken(
                f"text limit {self.text_limit} overlaps the audio codes at {self.audio_first}",
                source=self.source,
            )
        seen: dict[int, str] = {}
        for name, token in SPECIAL_TOKENS.items():
            token_id = getattr(self, name)
            if token_id in seen:
                raise ConflictingToken(
                    f"shares id {token_id} with {seen[token_id]}", source=self.source, token=token
                )
            if self.audio_first <= token_id <= self.audio_pad:
                raise ConflictingToken(
                    f"id {token_id} lies inside the audio codes", source=self.source, token=token
                )
            if token_id >= self.vocab_size:
                raise ConflictingToken(
                    f"id {token_id} is beyond the vocabulary", source=self.source, token=token
                )
            seen[token_id] = token

    # ----------------------------------------------------------------------------------------- constructors

    @classmethod
    def default(cls) -> VocabLayout:
        """The documented defaults: confirmed ids plus the unverified guesses named in `UNVERIFIED`."""
        return cls()

    @classmethod
    def from_token_map(
        cls, mapping: Mapping[str, int], *, source: str = "token map", vocab_size: int = VOCAB_SIZE
    ) -> VocabLayout:
        """Build a layout from a token -> id mapping (the tokenizer's added tokens).

        Args:
            mapping: token strings to ids; must define every token of `SPECIAL_TOKENS` and the confirmed
                audio tokens. Extra tokens are allowed; every ``<audio_N>`` present must sit at
                ``<audio_0> + N``.
            source: named in error messages (a file path, usually).
            vocab_size: rows of the embedding table.

        Raises:
            MissingToken: a needed token is absent.
            ConflictingToken: an id contradicts a confirmed id, or two needed tokens share an id.
        """
        for token, expected in CONFIRMED_IDS.items():
            if token not in mapping:
                raise MissingToken("not defined", source=source, token=token)
            if mapping[token] != expected:
                raise ConflictingToken(
                    f"has id {mapping[token]}, but Step-Audio-2 uses {expected}", source=source, token=token
                )
        for token, token_id in mapping.items():
            match = _AUDIO_TOKEN.fullmatch(token)
            if match is not None and token_id != AUDIO_FIRST_ID + int(match.group(1)):
                raise ConflictingToken(
                    f"has id {token_id}, expected <audio_0> + {match.group(1)} = "
                    f"{AUDIO_FIRST_ID + int(match.group(1))}",
                    source=source,
                    token=token,
                )
        ids: dict[str, int] = {}
        for name, token in SPECIAL_TOKENS.items():
            if token not in mapping:
                raise MissingToken("not defined", source=source, token=token)
            ids[name] = mapping[token]
        owners: dict[int, str] = {}
        for token, token_id in mapping.items():
            if token_id in owners and owners[token_id] != token:
                clash = owners[token_id]
                if token in SPECIAL_TOKENS.values() or clash in SPECIAL_TOKENS.values():
                    raise ConflictingToken(f"shares id {token_id} with {clash!r}", source=source, token=token)
            owners[token_id] = token
        return cls(**ids, vocab_size=vocab_size, source=source)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> VocabLayout:
        """Read the ids from a Hugging Face model directory with plain JSON (no tokenizer library).

        Reads ``tokenizer.json`` (``added_tokens``, then ``model.vocab``) and ``tokenizer_config.json``
        (``added_tokens_decoder``); at least one must exist. When both define a token they must agree.
        ``config.json`` supplies ``vocab_size`` (top level or ``text_config``) when present.

        Raises:
            TokenizerFilesMissing: neither tokenizer file exists or can be parsed.
            MissingToken: a needed token is in neither file.
            ConflictingToken: the files disagree, or an id contradicts a confirmed id.
        """
        root = Path(path)
        mapping: dict[str, int] = {}
        origin: dict[str, Path] = {}
        read_any = False
        for name, reader in (
            (TOKENIZER_JSON, _tokens_of_tokenizer_json),
            (TOKENIZER_CONFIG_JSON, _tokens_of_config),
        ):
            file = root / name
            if not file.is_file():
                continue
            for token, token_id in reader(file).items():
                if token in mapping and mapping[token] != token_id:
                    raise ConflictingToken(
                        f"has id {token_id} here but {mapping[token]} in {origin[token]}",
                        source=file,
                        token=token,
                    )
                mapping[token] = token_id
                origin[token] = file
            read_any = True
        if not read_any:
            raise TokenizerFilesMissing(
                f"neither {TOKENIZER_JSON} nor {TOKENIZER_CONFIG_JSON} found", source=root
            )
        vocab_size = _vocab_size_of(root / MODEL_CONFIG_JSON)
        for token in (*CONFIRMED_IDS, *SPECIAL_TOKENS.values()):
            if token not in mapping:
                raise MissingToken(
                    f"not defined in {TOKENIZER_JSON} or {TOKENIZER_CONFIG_JSON}", source=root, token=token
                )
        first_file = origin[SPECIAL_TOKENS["tts_start"]]
        return cls.from_token_map(mapping, source=str(first_file), vocab_size=vocab_size)

    # ------------------------------------------------------------------------------------------- queries

    def audio_code(self, token_id: int) -> int | None:
        """The 0-based speech code of an audio token id, or None for any other id (pads included)."""
        offset = token_id - self.audio_first
        return offset if 0 <= offset < self.audio_codes else None

    def audio_token_id(self, code: int) -> int:
        """The token id of speech code ``code`` (0..6560). Raises ValueError outside that range."""
        if type(code) is not int or not 0 <= code < self.audio_codes:
            raise ValueError(f"audio code must be an int in [0, {self.audio_codes}), got {code!r}")
        return self.audio_first + code

    def is_text(self, token_id: int) -> bool:
        """Whether an id is an ordinary text token (below `text_limit` and not a named control id)."""
        return 0 <= token_id < self.text_limit and token_id not in self.special_ids

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the named control tokens (`SPECIAL_TOKENS`)."""
        return frozenset(getattr(self, name) for name in SPECIAL_TOKENS)

    @property
    def pure_text_limit(self) -> int:
        """Every id below this is text with no exception: the parser's fast path."""
        return min(self.text_limit, *self.special_ids)

    def token_name(self, token_id: int) -> str | None:
        """The token string of a control, audio or pad id; None for text and unused ids."""
        for name, token in SPECIAL_TOKENS.items():
            if getattr(self, name) == token_id:
                return token
        if self.audio_first <= token_id <= self.audio_pad:
            return f"<audio_{token_id - self.audio_first}>"
        return None


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerFilesMissing(f"cannot read JSON: {exc}", source=file) from None


def _checked_id(value: object, file: Path, token: str) -> int:
    if type(value) is not int or value < 0:
        raise ConflictingToken(f"has a non-integer or negative id {value!r}", source=file, token=token)
    return value


def _tokens_of_tokenizer_json(file: Path) -> dict[str, int]:
    """Token -> id from ``added_tokens`` of a tokenizers-library ``tokenizer.json``, then its vocab."""
    data = _load_json(file)
    if not isinstance(data, dict):
        raise VocabError("top level is not an object", source=file)
    mapping: dict[str, int] = {}
    model = data.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        for token, token_id in vocab.items():
            if isinstance(token, str) and (token in SPECIAL_TOKENS.values() or token in CONFIRMED_IDS):
                mapping[token] = _checked_id(token_id, file, token)
    added = data.get("added_tokens", [])
    if not isinstance(added, list):
        raise VocabError("'added_tokens' is not a list", source=file)
    for entry in added:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise VocabError(f"malformed added token {entry!r}", source=file)
        token = entry["content"]
        token_id = _checked_id(entry.get("id"), file, token)
        if token in mapping and mapping[token] != token_id:
            raise ConflictingToken(f"has ids {mapping[token]} and {token_id}", source=file, token=token)
        mapping[token] = token_id
    return mapping


def _tokens_of_config(file: Path) -> dict[str, int]:
    """Token -> id from ``added_tokens_decoder`` (id string -> {"content": ...}) of ``tokenizer_config.json``."""
    data = _load_json(file)
    if not isinstance(data, dict):
        raise VocabError("top level is not an object", source=file)
    decoder = data.get("added_tokens_decoder", {})
    if not isinstance(decoder, dict):
        raise VocabError("'added_tokens_decoder' is not an object", source=file)
    mapping: dict[str, int] = {}
    for key, entry in decoder.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise VocabError(f"malformed added token {key!r}: {entry!r}", source=file)
        token = entry["content"]
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise ConflictingToken(f"has a non-integer id {key!r}", source=file, token=token)
        token_id = int(key)
        if token in mapping and mapping[token] != token_id:
            raise ConflictingToken(f"has ids {mapping[token]} and {token_id}", source=file, token=token)
        mapping[token] = token_id
    return mapping


def _vocab_size_of(file: Path) -> int:
    """``vocab_size`` from a model ``config.json`` (top level or ``text_config``); the default if absent."""
    if not file.is_file():
        return VOCAB_SIZE
    data = _load_json(file)
    candidates = [data.get("vocab_size")] if isinstance(data, dict) else []
    text_config = data.get("text_config") if isinstance(data, dict) else None
    if isinstance(text_config, dict):
        candidates.append(text_config.get("vocab_size"))
    for value in candidates:
        if value is None:
            continue
        if type(value) is not int or value <= AUDIO_PAD_ID:
            raise ConflictingToken(
                f"vocab_size {value!r} does not cover the audio pad {AUDIO_PAD_ID}", source=file
            )
        return value
    return VOCAB_SIZE
