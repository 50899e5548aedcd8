"""Incremental detokenisation: token ids in, text deltas out, never a split UTF-8 character.

Byte-level BPE tokenizers can spread one character over several ids; decoding a prefix then yields U+FFFD for
the incomplete tail. We decode a short window of recent ids, hold the delta back while it ends in U+FFFD, and
emit only text that a longer decode would not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from realtime.backends.base import TextCodec

REPLACEMENT_CHAR = "\ufffd"
# A partial character spans at most 4 byte tokens; a U+FFFD still trailing after this many held ids is part
# of the text itself (invalid bytes from the model), so it is emitted rather than held forever.
_MAX_HELD_IDS = 32
_MAX_CHAR_IDS = 4  # UTF-8 characters are at most 4 bytes


class IncrementalDetokenizer:
    """Turns a growing id sequence into text deltas.

    Not thread-safe; one instance per text channel of one response.

    Args:
        codec: the backend's tokenizer (`TextCodec.decode` must be pure).
    """

    def __init__(self, codec: TextCodec) -> None:
        self._codec = codec
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the context window decoded with new ids
        self._read_offset = 0  # ids before this have been emitted as text

    def feed(self, ids: Sequence[int]) -> str:
        """Add ids; return the newly complete text (possibly empty)."""
        if not ids:
            return ""
        self._ids.extend(ids)
        return self._emit(final=False)

    def flush(self) -> str:
        """End of the channel: return whatever is held back, replacement characters included."""
        text = self._emit(final=True)
        self._ids.clear()
        self._prefix_offset = self._read_offset = 0
        return text

    def _emit(self, *, final: bool) -> str:
        if self._read_offset >= len(self._ids):
            return ""
        prefix_text = self._codec.decode(self._ids[self._prefix_offset : self._read_offset])
        end = len(self._ids)
        full_text = self._codec.decode(self._ids[self._prefix_offset : end])
        if not final and full_text.endswith(REPLACEMENT_CHAR) and end - self._read_offset < _MAX_HELD_IDS:
            # hold back only the ids of the unfinished character: find the longest clean prefix
            for cut in range(end - 1, max(self._read_offset, end - _MAX_CHAR_IDS) - 1, -1):
                text = self._codec.decode(self._ids[self._prefix_offset : cut])
                if not text.endswith(REPLACEMENT_CHAR):
                    end, full_text = cut, text
                    break
            else:
                return ""
        if len(full_text) <= len(prefix_text):
            if final:
                return full_text[len(prefix_text) :] if full_text.startswith(prefix_text) else ""
            return ""
        delta = full_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = end
        # keep memory bounded: ids before the context window are never decoded again
        if self._prefix_offset > 0:
            del self._ids[: self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0
        return delta
