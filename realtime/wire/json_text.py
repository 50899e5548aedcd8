"""Checks on untrusted JSON text that `json.loads` does not make, shared by the WebSocket and HTTP front doors.

Two inputs that are valid JSON syntax still ended as internal errors downstream, so both are refused where the
text is parsed, with the client's mistake named:

- nesting: `json.loads` recurses once per level, so a few hundred kilobytes of brackets raise `RecursionError`;
  `load_untrusted_json` measures the nesting without parsing (`json_depth`) before `json.loads` runs.
- unpaired surrogates: an escape such as ``"\\ud800"`` without its partner decodes to a Python string that
  cannot be encoded as UTF-8 again (prompts, logs and every echo of it fail); `refuse_unpaired_surrogates`
  finds the first such string after parsing, so the error can name the field.

Text that is not JSON at all stays the caller's to word (`json.JSONDecodeError`): the two protocols name it
differently.
"""

from __future__ import annotations

import json
import re

import numpy as np

from realtime.errors import CODE_INVALID_VALUE, CODE_NESTING_TOO_DEEP, ProtocolViolation

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


def load_untrusted_json(text: str, *, reject_constants: bool = False) -> object:
    """`json.loads` of client text, its nesting checked first.

    Args:
        text: the frame or request body.
        reject_constants: refuse ``NaN`` and ``Infinity`` (not JSON, but `json.loads` takes them).

    Raises:
        ProtocolViolation: ``nesting_too_deep`` over `MAX_JSON_DEPTH` levels.
        ValueError: not JSON (`json.JSONDecodeError`), or a refused constant.
    """
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ProtocolViolation(
            CODE_NESTING_TOO_DEEP,
            f"Invalid JSON: nested {depth} levels deep; at most {MAX_JSON_DEPTH} levels are accepted.",
        )
    try:
        return json.loads(text, parse_constant=_reject_constant if reject_constants else None)
    except RecursionError:  # unreachable behind json_depth; kept so no input can become internal_error
        raise ProtocolViolation(CODE_NESTING_TOO_DEEP, "Invalid JSON: nested too deeply.") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def refuse_unpaired_surrogates(text: str, value: object) -> None:
    """Refuse ``value`` (parsed from ``text``) when a string or key in it holds an unpaired surrogate.

    `json.loads` joins an escaped surrogate pair into one character, so any surrogate left is unpaired. The
    walk runs only when ``text`` has a surrogate escape at all (one regex scan otherwise).

    Raises:
        ProtocolViolation: ``invalid_value`` with ``param`` the field's path (``item.content[0].text``); a bad
            object key names the object holding it; none at the top level.
    """
    if _SURROGATE_ESCAPE.search(text) is None:
        return
    path = _find_surrogate(value, "")
    if path is None:
        return
    where = f"Invalid value for '{path}'" if path else "Invalid JSON"
    raise ProtocolViolation(
        CODE_INVALID_VALUE,
        f"{where}: a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); text must be valid "
        "Unicode.",
        path or None,
    )


def is_valid_text(value: str) -> bool:
    """Whether ``value`` holds no unpaired surrogate, so it can be echoed back (UTF-8 can encode it)."""
    return _SURROGATES.search(value) is None


def _find_surrogate(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return None if is_valid_text(value) else path
    if isinstance(value, list):
        for index, element in enumerate(value):
            found = _find_surrogate(element, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, element in value.items():
            if not is_valid_text(key):
                return path
            found = _find_surrogate(element, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    return None
