"""Validation of client payloads against the openai models, with OpenAI-style errors naming the field.

pydantic errors become `ProtocolViolation`s (``missing_required_parameter``, ``invalid_value``,
``invalid_type``) whose ``param`` is the dotted path of the field (``session.audio.output.format.rate``);
fields the openai models keep as extras become ``unknown_parameter``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from realtime.errors import (
    CODE_DECIMAL_ABOVE_MAX,
    CODE_DECIMAL_BELOW_MIN,
    CODE_INTEGER_ABOVE_MAX,
    CODE_INTEGER_BELOW_MIN,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_MISSING_PARAMETER,
    CODE_UNKNOWN_PARAMETER,
    ProtocolViolation,
)

_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

_M = TypeVar("_M", bound=BaseModel)


def validate_model(model: type[_M], data: dict[str, Any], prefix: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise violation_from(exc, prefix, data) from None


def violation_from(exc: ValidationError, prefix: str, data: Any = None) -> ProtocolViolation:
    """The first pydantic error as a `ProtocolViolation`; ``data`` (the validated payload) tells field names
    from union-member tags (``str``, ``int``) that pydantic appends after a non-object value."""
    error = exc.errors()[0]
    parts: list[str] = []
    node: Any = data
    for loc in error["loc"]:
        if isinstance(loc, int):
            parts.append(f"[{loc}]")
            node = node[loc] if isinstance(node, list) and 0 <= loc < len(node) else None
        elif _FIELD_NAME.match(loc) and (data is None or isinstance(node, dict)):
            parts.append(f".{loc}" if parts or prefix else loc)
            node = node.get(loc) if isinstance(node, dict) else None
    param = prefix + "".join(parts)
    expected = (error.get("ctx") or {}).get("expected")
    number = error.get("input")
    if error["type"] == "literal_error" and isinstance(number, int) and str(expected).isdigit():
        only = int(str(expected))  # a one-value numeric field (``rate: 24000``): a bound on both sides
        return out_of_range(param, number, minimum=only, maximum=only)
    if error["type"] == "missing":
        return ProtocolViolation(CODE_MISSING_PARAMETER, f"Missing required parameter: '{param}'.", param)
    if error["type"] in {
        "literal_error",
        "enum",
        "union_tag_invalid",
        "less_than_equal",
        "greater_than_equal",
    }:
        return ProtocolViolation(CODE_INVALID_VALUE, f"Invalid value for '{param}': {error['msg']}.", param)
    return ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{param}': {error['msg']}.", param)


def check_keys(raw: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            name = f"{prefix}.{key}" if prefix else key
            raise ProtocolViolation(CODE_UNKNOWN_PARAMETER, f"Unknown parameter: '{name}'.", name)


def missing_or_invalid(raw: dict[str, Any], key: str, prefix: str = "") -> ProtocolViolation:
    name = f"{prefix}.{key}" if prefix else key
    if raw.get(key) is None:
        return ProtocolViolation(CODE_MISSING_PARAMETER, f"Missing required parameter: '{name}'.", name)
    return ProtocolViolation(CODE_INVALID_TYPE, f"Invalid type for '{name}'.", name)


def reject_extras(model: BaseModel, path: str, allowed: frozenset[str]) -> None:
    """Raise ``unknown_parameter`` for the first field the openai model kept as an extra."""
    for key in model.model_extra or {}:
        if key not in allowed:
            name = f"{path}.{key}" if path else key
            raise ProtocolViolation(CODE_UNKNOWN_PARAMETER, f"Unknown parameter: '{name}'.", name)
    for key in model.model_fields_set:
        value = getattr(model, key, None)
        child = f"{path}.{key}" if path else key
        if isinstance(value, BaseModel):
            reject_extras(value, child, frozenset())
        elif isinstance(value, list):
            for index, element in enumerate(value):
                if isinstance(element, BaseModel):
                    reject_extras(element, f"{child}[{index}]", frozenset({"id"}))


def out_of_range(
    param: str, value: float, *, minimum: float | None = None, maximum: float | None = None
) -> ProtocolViolation:
    """OpenAI's refusal of a number outside ``[minimum, maximum]``: ``integer_below_min_value``,
    ``integer_above_max_value``, ``decimal_below_min_value`` or ``decimal_above_max_value``, with its wording
    ("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.").

    ``value`` must lie outside the range: below ``minimum`` reads as below, anything else as above.
    """
    kind = "integer" if isinstance(value, int) and not isinstance(value, bool) else "decimal"
    below = minimum is not None and value < minimum
    codes = {
        ("integer", True): CODE_INTEGER_BELOW_MIN,
        ("integer", False): CODE_INTEGER_ABOVE_MAX,
        ("decimal", True): CODE_DECIMAL_BELOW_MIN,
        ("decimal", False): CODE_DECIMAL_ABOVE_MAX,
    }
    bound = f">= {_number(minimum)}" if below else f"<= {_number(maximum)}"
    where = "below minimum" if below else "above maximum"
    return ProtocolViolation(
        codes[(kind, below)],
        f"Invalid '{param}': {kind} {where} value. Expected a value {bound}, but got {_number(value)} instead.",
        param,
    )


def _number(value: float | None) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_range(param: str, value: float, minimum: float | None, maximum: float | None) -> None:
    """Raise `out_of_range` unless ``minimum <= value <= maximum`` (a None bound is open)."""
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise out_of_range(param, value, minimum=minimum, maximum=maximum)
