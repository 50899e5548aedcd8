"""Typed errors of the streaming parser: bad token ids and bad vocabulary files.

Two families, both `ValueError` so a caller that only wants "bad input" can catch that:

- `ParserError`: an id fed to a parser is not a valid token id of the layout (wrong type, negative, beyond
  the vocabulary) or a parser is used after `flush()`. A parser that raises has not changed its state: the
  whole `feed()` call is rejected, so the caller may log it and carry on with the next chunk.
- `VocabError`: a model directory's tokenizer files are missing, incomplete or contradict the confirmed
  Step-Audio-2 ids. Raised at start-up; the message names the file and the token.
"""

from __future__ import annotations

from pathlib import Path


class ParserError(ValueError):
    """Base class for invalid input to a parser."""


class InvalidTokenType(ParserError):
    """An element of the id sequence is not an int (``bool`` counts as not an int).

    Attributes:
        index: position of the offending element in the sequence passed to ``feed``.
        value: the offending element.
    """

    def __init__(self, index: int, value: object) -> None:
        super().__init__(f"token id at index {index} is {type(value).__name__} {value!r}, expected int")
        self.index = index
        self.value = value


class NegativeTokenId(ParserError):
    """A token id is below zero."""

    def __init__(self, index: int, value: int) -> None:
        super().__init__(f"token id at index {index} is negative: {value}")
        self.index = index
        self.value = value


class TokenIdOutOfRange(ParserError):
    """A token id is at or beyond the vocabulary size of the layout."""

    def __init__(self, index: int, value: int, vocab_size: int) -> None:
        super().__init__(f"token id at index {index} is {value}, beyond the vocabulary (size {vocab_size})")
        self.index = index
        self.value = value
        self.vocab_size = vocab_size


class ParserClosed(ParserError):
    """``feed`` was called after ``flush``: a parser serves exactly one generation."""


class VocabError(ValueError):
    """Base class for a vocabulary that cannot be trusted.

    Attributes:
        source: the file (or description of the mapping) the problem was found in.
        token: the token string concerned, when there is one.
    """

    def __init__(self, message: str, *, source: str | Path, token: str | None = None) -> None:
        where = f"{source}" if token is None else f"{source}: token {token!r}"
        super().__init__(f"{where}: {message}")
        self.source = str(source)
        self.token = token


class TokenizerFilesMissing(VocabError):
    """Neither ``tokenizer.json`` nor ``tokenizer_config.json`` could be read from a model directory."""


class MissingToken(VocabError):
    """A special token the layout needs is not defined by the tokenizer files."""


class ConflictingToken(VocabError):
    """A token has two ids, two tokens share one id, or an id contradicts a confirmed Step-Audio-2 id."""
