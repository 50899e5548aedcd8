"""Incremental detokenisation: deltas concatenate to the full text and never split a UTF-8 character."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from realtime.backends.synthetic import WordCodec
from realtime.speech.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from streaming_parser import VocabLayout


class ByteCodec:
    """Byte-level codec: id = byte value (a multi-byte character spans several ids), like byte BPE."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


TEXTS = ["plain ascii words", "héllo wörld", "日本語のテキスト", "emoji 🎉🎈 mixed ✓ text", "a"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_byte_tokens_never_split_characters(text: str, chunk: int) -> None:
    codec = ByteCodec()
    ids = codec.encode(text)
    detok = IncrementalDetokenizer(codec)
    deltas = [detok.feed(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert all(REPLACEMENT_CHAR not in d for d in deltas)


def test_truncated_character_is_flushed_as_replacement() -> None:
    codec = ByteCodec()
    detok = IncrementalDetokenizer(codec)
    ids = codec.encode("ok é")[:-1]  # the last character cut in half
    assert detok.feed(ids) == "ok "
    assert detok.flush() == REPLACEMENT_CHAR
    assert detok.flush() == ""


def test_word_codec_leading_space_context() -> None:
    codec = WordCodec(VocabLayout.default())
    ids = codec.encode("hello , this is the voice .")
    detok = IncrementalDetokenizer(codec)
    deltas = [detok.feed([i]) for i in ids] + [detok.flush()]
    assert deltas[0] == "hello"
    assert "".join(deltas) == codec.decode(ids) == "hello, this is the voice."
