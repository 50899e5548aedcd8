"""Settings declared once: a dataclass field made with `setting` is its flag, env variable, help and bounds.

`realtime.config.ServerConfig` is built from these declarations; nothing else lists a setting. From one field
this module derives the ``realtime serve`` flag (`add_arguments`), the ``STREAMVOICE_*`` environment variable
(`build`), the ``--help`` line with the default and the variable, the bound checks (`check`, run by every
config's ``__post_init__``), and the Markdown tables the docs embed (`markdown_table`). Precedence, lowest to
highest: the field's default < the environment variable < an explicit flag.

Adding a setting is one edit, a field in the frozen config dataclass of `realtime/config.py`::

    max_widgets: int = setting(
        8, Section.LIMITS, "widgets one session may hold; more get widget_limit_reached", ge=1
    )

That field becomes ``--max-widgets N`` in the "security and limits" group of ``realtime serve --help``
("... (default: 8; env STREAMVOICE_MAX_WIDGETS)"), the variable ``STREAMVOICE_MAX_WIDGETS``, a check that
refuses 0 naming both (``--max-widgets / STREAMVOICE_MAX_WIDGETS must be >= 1, got 0``), and a row of the
README's limits table (`make docs` rewrites it; tests/test_docs.py fails while it is stale). The flag is
``--`` plus the field name with dashes and the variable ``STREAMVOICE_`` plus the field name in upper case;
``flag=`` and ``env=`` override them (only to keep the names users already have). Field names are unique
across the whole configuration, groups included (tests/realtime/test_settings.py checks it).

Types a field may have: ``int``, ``float``, ``str``, ``bool``, ``Path``, a ``Literal`` of strings (the
choices), any of those ``| None``, and ``tuple[X, ...]`` (a list: a comma-separated value in the variable,
one comma-separated flag value, or with ``repeat=True`` a flag given once per element). ``item=`` parses one
text value (one element of a list) where the type alone does not say how. A ``bool`` field's flag flips its
default (``--no-audio-check`` for a field that defaults to True); its variable takes true/false, 1/0, yes/no,
on/off. An empty variable counts as unset.

A group of settings is a frozen dataclass of `setting` fields, held by the parent under `group`; its settings
are flat on the command line and in the environment, and typed in code (``config.llm.top_p``).

Why not pydantic-settings: its command-line source owns the whole argument parser (our ``realtime`` command
tree of serve, bench and make-dummy) and derives flag names from fields, while ours must keep names users
script against (``--first-chunk`` for ``first_hop_tokens``); the walk over dataclass fields below is smaller
than the adapter would be, and keeps configs as the house's frozen dataclasses.

Size: over 400 lines: the declaration types and everything derived from them (parsing, checks, flags, doc
tables) stay together, so the contract a new setting relies on is read in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "STREAMVOICE_"
_SETTING = "streamvoice.setting"  # dataclass field metadata key of a `Setting`
_GROUP = "streamvoice.group"  # dataclass field metadata key of a group of settings
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
LIST_SEPARATOR = ","
# the value's name in --help: by the field name's ending (its unit), else by its type
_UNITS = {"seconds": "SECONDS", "timeout": "SECONDS", "interval": "SECONDS", "_mb": "MB", "_ms": "MS"}
_METAVARS: dict[type, str] = {int: "N", float: "NUMBER", Path: "DIR"}

ConfigT = TypeVar("ConfigT")


class Section(enum.Enum):
    """Where a setting is shown: its group in ``realtime serve --help`` (the value is the title) and the doc
    table that lists it (`markdown_table`: README "Security and limits" for LIMITS, docs/SGLANG.md for LLM)."""

    NETWORK = "network"
    LIMITS = "security and limits (README 'Security and limits')"
    LLM = "LLM backend (docs/SGLANG.md §7)"
    SPEECH = "speech decoder (Token2Wav)"
    LOGGING = "logging"


class SettingError(ValueError):
    """A setting's value does not parse or is out of bounds; the message names the flag and the variable."""


@dataclass(frozen=True)
class Setting:
    """What `setting` stores in a field's metadata (see the module docstring for the derived names).

    Attributes:
        section: the ``--help`` group and doc table.
        help: what it does and, for a limit, what a client sees when it is reached. No default, no variable:
            those are appended.
        flag: the flag when it is not ``--<field-name>``.
        env: the variable when it is not ``STREAMVOICE_<FIELD-NAME>``.
        ge: inclusive lower bound (numbers).
        gt: exclusive lower bound (numbers).
        le: inclusive upper bound (numbers).
        shown_default: how ``--help`` and the docs show the default when the value alone says too little.
        item: parses one text value (one element of a list); raises ValueError with the reason.
        repeat: a list flag given once per element (``--voice a=a.wav --voice b=b.wav``).
        separator: what splits a list's text (the variable, or a flag without ``repeat``).
        metavar: the value's name in ``--help``.
    """

    section: Section
    help: str
    flag: str | None = None
    env: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    shown_default: str | None = None
    item: Callable[[str], object] | None = None
    repeat: bool = False
    separator: str = LIST_SEPARATOR
    metavar: str | None = None


def setting(
    default: object,
    section: Section,
    help: str,
    *,
    default_factory: Callable[[], object] | None = None,
    **options: Any,
) -> Any:
    """Declare one setting: a dataclass field with its default and a `Setting` (``options`` are its fields).

    Returns ``Any`` like `dataclasses.field`, so the field's annotation stays its type for mypy.
    """
    metadata = {_SETTING: Setting(section, help, **options)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def group(cls: type[object]) -> Any:
    """Declare a field holding a frozen dataclass of more settings (built from the same flags and variables)."""
    return dataclasses.field(default_factory=cls, metadata={_GROUP: True})


@dataclass(frozen=True)
class ValueType:
    """A setting's type, read from its annotation.

    Attributes:
        base: ``int``, ``float``, ``str``, ``bool`` or ``Path`` (of one element, for a list).
        choices: the allowed strings of a ``Literal``.
        optional: None is a valid value.
        many: a ``tuple[X, ...]``.
    """

    base: type
    choices: tuple[str, ...] = ()
    optional: bool = False
    many: bool = False


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting, resolved: everything a flag, a variable, a check or a doc row needs.

    Attributes:
        name: the field name, unique in the configuration (the argparse dest).
        path: attribute names from the root config to the value (``("llm", "top_p")``).
        owner: the dataclass that declares the field.
        type: the value's type.
        default: the default value (from the default factory when there is one).
        flag: the command-line flag.
        env: the environment variable.
        declared: the declaration itself.
    """

    name: str
    path: tuple[str, ...]
    owner: type
    type: ValueType
    default: object
    flag: str
    env: str
    declared: Setting

    @property
    def names(self) -> str:
        """``--flag / STREAMVOICE_VAR``: how every message about this setting starts."""
        return f"{self.flag} / {self.env}"

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.declared.shown_default is not None:
            return self.declared.shown_default
        return format_value(self.default)

    @property
    def metavar(self) -> str | None:
        """The value's name in ``--help`` (None for a switch)."""
        if self.type.base is bool and not self.type.many:
            return None
        if self.declared.metavar:
            return self.declared.metavar
        if self.type.choices:
            return "{" + ",".join(self.type.choices) + "}"
        for unit in _UNITS:
            if self.name.endswith(unit):
                return _UNITS[unit]
        return _METAVARS.get(self.type.base) or self.flag.lstrip("-").replace("-", "_").upper()

    @property
    def help_line(self) -> str:
        """The ``--help`` text: the declared help, the default and the variable (how a list is written in it)."""
        env = self.env
        if self.type.many:
            separator = self.declared.separator
            env += " (comma-separated)" if separator == LIST_SEPARATOR else f" ({separator!r}-separated)"
        return f"{self.declared.help} (default: {self.shown_default}; env {env})"

    def parse(self, raw: str | list[str], source: str) -> object:
        """The value of ``raw``: a variable's or a flag's text, or a repeated flag's texts.

        Args:
            raw: the text (a list for a repeated flag).
            source: ``"flag"`` or ``"env"``, for the message.

        Raises:
            SettingError: the text does not parse; the message names the flag and the variable.
        """
        try:
            if isinstance(raw, list):
                return tuple(self._parse_one(part) for part in raw)
            if self.type.many:
                parts = (part.strip() for part in raw.split(self.declared.separator))
                return tuple(self._parse_one(part) for part in parts if part)
            return self._parse_one(raw)
        except ValueError as exc:
            shown = raw if isinstance(raw, str) else " ".join(raw)
            given = f"{self.flag} {shown!r}" if source == "flag" else f"{self.env}={shown!r}"
            raise SettingError(f"{self.names}: {exc} (given as {given})") from None

    def _parse_one(self, text: str) -> object:
        if self.declared.item is not None:
            return self.declared.item(text)
        base = self.type.base
        if self.type.choices:
            if text not in self.type.choices:
                raise ValueError(f"must be one of {', '.join(self.type.choices)}")
            return text
        if base is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("must be true or false (1/0, yes/no, on/off)")
            return lowered in _TRUE
        if base is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError("must be a whole number") from None
        if base is float:
            try:
                return float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        if base is Path:
            return Path(text).expanduser()
        return text

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of bounds or not a choice, or None when it is fine."""
        if value is None or self.type.many:
            return None
        if self.type.choices and value not in self.type.choices:
            return f"must be one of {', '.join(self.type.choices)}, got {value!r}"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        declared = self.declared
        if declared.ge is not None and not value >= declared.ge:
            return f"must be >= {declared.ge:g}, got {value:g}"
        if declared.gt is not None and not value > declared.gt:
            return f"must be > {declared.gt:g}, got {value:g}"
        if declared.le is not None and not value <= declared.le:
            return f"must be <= {declared.le:g}, got {value:g}"
        return None


def format_value(value: object) -> str:
    """A default as people write it: numbers without trailing zeros, ``none`` for None or an empty list."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(format_value(part) for part in value)
    return str(value)


def settings_of(cls: type) -> tuple[SettingSpec, ...]:
    """Every setting of a config dataclass, groups included, in declaration order (computed once per class).

    Raises:
        TypeError: a field's annotation is not a supported type, or two settings share a name.
    """
    specs = _SPECS.get(cls)
    if specs is None:
        specs = _SPECS[cls] = _resolve(cls)
    return specs


_SPECS: dict[type, tuple[SettingSpec, ...]] = {}


def _resolve(cls: type) -> tuple[SettingSpec, ...]:
    specs = tuple(_walk(cls, ()))
    seen: set[str] = set()
    for spec in specs:
        for name in (spec.name, spec.flag, spec.env):
            if name in seen:
                raise TypeError(f"{cls.__name__}: two settings are named {name}")
            seen.add(name)
    return specs


def _walk(cls: type, prefix: tuple[str, ...]) -> Iterator[SettingSpec]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get(_GROUP):
            yield from _walk(hints[field.name], (*prefix, field.name))
            continue
        declared = field.metadata.get(_SETTING)
        if not isinstance(declared, Setting):
            continue
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        yield SettingSpec(
            name=field.name,
            path=(*prefix, field.name),
            owner=cls,
            type=_value_type(hints[field.name], f"{cls.__name__}.{field.name}"),
            default=default,
            flag=declared.flag or "--" + field.name.replace("_", "-"),
            env=declared.env or ENV_PREFIX + field.name.upper(),
            declared=declared,
        )


def _value_type(hint: object, where: str) -> ValueType:
    optional = False
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{where}: only X | None unions are settings, got {hint}")
        optional, hint = True, rest[0]
        args = typing.get_args(hint)
    many = typing.get_origin(hint) is tuple
    if many:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: a list setting is tuple[X, ...], got {hint}")
        hint = args[0]
        args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return ValueType(str, tuple(str(arg) for arg in args), optional, many)
    if typing.get_origin(hint) is tuple:  # a tuple element (voices: (name, path)) needs its `item` parser
        return ValueType(tuple, (), optional, many)
    if hint in (int, float, str, bool, Path):
        return ValueType(typing.cast(type, hint), (), optional, many)
    raise TypeError(f"{where}: unsupported setting type {hint}")


def check(config: object) -> None:
    """Check every setting declared directly on ``config``'s class (a ``__post_init__`` calls this).

    Raises:
        SettingError: a value is out of bounds or not one of its choices; the message names the flag and the
            variable.
    """
    for spec in settings_of(type(config)):
        if spec.owner is not type(config):
            continue
        problem = spec.problem(getattr(config, spec.name))
        if problem:
            raise SettingError(f"{spec.names} {problem}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add a flag for every setting of ``cls``, one argument group per `Section`, in the sections' order.

    Flags are stored as text under the setting's name and only when given, so `build` can tell a flag from a
    default and parse flags and variables with the same code.
    """
    specs = settings_of(cls)
    for section in Section:
        members = [spec for spec in specs if spec.declared.section is section]
        if not members:
            continue
        arguments = parser.add_argument_group(section.value)
        for spec in members:
            kwargs: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS}
            kwargs["help"] = spec.help_line.replace("%", "%%")
            if spec.type.base is bool and not spec.type.many:
                kwargs["action"] = "store_const"
                kwargs["const"] = "false" if spec.default else "true"
            else:
                kwargs["metavar"] = spec.metavar
                if spec.declared.repeat:
                    kwargs["action"] = "append"
            arguments.add_argument(spec.flag, **kwargs)


def build(
    cls: type[ConfigT],
    environ: Mapping[str, str],
    flags: argparse.Namespace | Mapping[str, object] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> ConfigT:
    """A config from its defaults, then ``environ``'s variables, then ``flags``, then ``overrides``.

    Args:
        cls: the config dataclass.
        environ: the environment (``os.environ``).
        flags: what `add_arguments`' flags parsed to (only the flags given are present).
        overrides: values by setting name (or group field name); None values are ignored.

    Raises:
        SettingError: a value does not parse or is out of bounds.
    """
    given = vars(flags) if isinstance(flags, argparse.Namespace) else dict(flags or {})
    return _build(cls, environ, given, {k: v for k, v in (overrides or {}).items() if v is not None})


def _build(
    cls: type[ConfigT],
    environ: Mapping[str, str],
    flags: Mapping[str, object],
    overrides: Mapping[str, object],
) -> ConfigT:
    specs = {spec.name: spec for spec in settings_of(cls) if spec.owner is cls}
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.name
        if name in overrides:
            values[name] = overrides[name]
        elif field.metadata.get(_GROUP):
            values[name] = _build(hints[name], environ, flags, overrides)
        elif name in specs:
            spec = specs[name]
            if name in flags:
                values[name] = spec.parse(typing.cast("str | list[str]", flags[name]), "flag")
            elif environ.get(spec.env):
                values[name] = spec.parse(environ[spec.env], "env")
    return cls(**values)


def markdown_table(cls: type, section: Section) -> str:
    """The Markdown table of ``section``'s settings (flag, variable, default, help) that the docs embed."""
    rows = ["| flag | env | default | what it does; what a client sees |", "|---|---|---|---|"]
    for spec in settings_of(cls):
        if spec.declared.section is not section:
            continue
        flag = spec.flag if spec.metavar is None else f"{spec.flag} {spec.metavar}"
        help_text = spec.declared.help.replace("|", "\\|")
        rows.append(f"| `{flag}` | `{spec.env}` | {spec.shown_default} | {help_text} |")
    return "\n".join(rows) + "\n"
