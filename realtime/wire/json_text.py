"""Checks on untrusted JSON text that `json.loads` does not make, shared by the WebSocket and HTTP front doors.

Two inputs that are valid JSON syntax still ended as internal errors downstream, so both are refused where the
text is parsed, with the client's mistake named:

- nesting: `json.loads` recurses once per level, so a few hundred kilobytes of brackets raise `RecursionError`;
  `json_depth` measures the nesting without parsing, before `json.loads` runs.
- unpaired surrogates: an escape such as ``"\\ud800"`` without its partner decodes to a Python string that
  cannot be encoded as UTF-8 again (prompts, logs and every echo of it fail); `unpaired_surrogate_path` finds
  the first such string after parsing, so the error can name the field.
"""

from __future__ import annotations

import re

import numpy as np

# Deepest JSON nesting accepted: a session.update with tool schemas nests ~10 deep; far below the depth at
# which json.loads or pydantic would recurse out of stack.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # escape-aware, no backtracking
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
# The escape of a UTF-16 surrogate (U+D800..U+DFFF). Text decoded from UTF-8 holds none itself, so only an
# escape can bring one in; searching for it first keeps the common case (none) to one regex scan.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def json_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside JSON strings, without parsing it (linear time).

    Counts only when the text has more opening brackets than `MAX_JSON_DEPTH` (a cheap test that passes
    every ordinary event); then strings are blanked out and the running depth is a cumulative sum.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    data = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    return int(np.cumsum(_DEPTH_STEP[data], dtype=np.int32).max(initial=0))


def unpaired_surrogate_path(text: str, value: object) -> str | None:
    """Where ``value`` (parsed from ``text``) holds a string with an unpaired surrogate, else None.

    `json.loads` joins an escaped surrogate pair into one character, so any surrogate left is unpaired.

    Returns:
        The field's path as the error ``param`` writes it (``item.content[0].text``); a bad object key names
        the object holding it; ``""`` is the top level.
    """
    if _SURROGATE_ESCAPE.search(text) is None:
        return None
    return _find_surrogate(value, "")


def _find_surrogate(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if _SURROGATES.search(value) else None
    if isinstance(value, list):
        for index, element in enumerate(value):
            found = _find_surrogate(element, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, element in value.items():
            if _SURROGATES.search(key):
                return path
            found = _find_surrogate(element, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    return None


def surrogate_message(path: str) -> str:
    """The client-facing explanation for `unpaired_surrogate_path`'s finding."""
    where = f"Invalid value for '{path}'" if path else "Invalid JSON"
    return f"{where}: a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); text must be valid Unicode."
