"""The import layering of docs/ARCHITECTURE.md §1.3, checked mechanically on the source (AST), not by review.

`streaming_parser` is a pure library: standard library and itself only. `token2wav` is synchronous model
code: it may use torch and friends but never the server stack. `step_audio2_sglang` runs inside SGLang's
processes and imports nothing of the server. Inside `realtime/`, sub-packages import one way (`ALLOWED`), and
no module of the project takes part in an import cycle (function-level imports count: a lazy import that closes
a cycle is still a cycle in the design).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streaming_parser", "token2wav", "step_audio2_sglang", "realtime")
TOKEN2WAV_FORBIDDEN = frozenset(
    {"asyncio", "starlette", "realtime", "uvicorn", "websockets", "step_audio2_sglang"}
)
FOUNDATION = "foundation"  # realtime/{settings,config,config_groups,errors,metrics,audio,codecs}.py
ENTRY = "entry"  # realtime/{cli,__main__}.py, realtime/commands/, realtime/bench/
# layer -> the realtime layers its modules may import (their own layer included)
ALLOWED: dict[str, frozenset[str]] = {
    FOUNDATION: frozenset({FOUNDATION}),
    "backends": frozenset({FOUNDATION, "backends"}),
    "speech": frozenset({FOUNDATION, "backends", "speech"}),
    "wire": frozenset({FOUNDATION, "wire"}),
    "session": frozenset({FOUNDATION, "backends", "speech", "wire", "session"}),
    "webrtc": frozenset({FOUNDATION, "backends", "speech", "wire", "session", "webrtc"}),
    "http": frozenset({FOUNDATION, "backends", "speech", "wire", "session", "webrtc", "http"}),
    ENTRY: frozenset({FOUNDATION, "backends", "speech", "wire", "session", "webrtc", "http", ENTRY}),
}
# the one module of the SGLang plugin the server may import: its torch-free placeholder arithmetic
PLUGIN_SHARED = frozenset({"step_audio2_sglang.placeholders"})


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Dotted names of every module a file imports anywhere (function-level imports included).

    ``from a.b import c`` counts as ``a.b.c`` when that is a module of the tree under ``root``, else ``a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports are banned by ruff; treat them as the package itself
                names.add(path.relative_to(root).parts[0])
            elif node.module:
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    is_module = _module_path(candidate, root) is not None
                    names.add(candidate if is_module else node.module)
    return names


def _module_path(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in a file."""
    return {name.split(".")[0] for name in imported_modules(path)}


def layer_of(module: str) -> str | None:
    """The realtime layer of a dotted module name, None outside `realtime`."""
    parts = module.split(".")
    if parts[0] != "realtime":
        return None
    if len(parts) == 1 or parts[1] in (
        "settings",
        "config",
        "config_groups",
        "errors",
        "metrics",
        "audio",
        "codecs",
    ):
        return FOUNDATION
    if parts[1] in ("cli", "__main__", "commands", "bench"):
        return ENTRY
    return parts[1]


def layering_violations(root: Path, packages: Iterable[str]) -> list[str]:
    """Every import that points the wrong way, as ``"importer -> imported"``."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            importer = module_name(path, root)
            for imported in sorted(imported_modules(path, root)):
                top = imported.split(".")[0]
                if importer.startswith("realtime"):
                    here, there = layer_of(importer), layer_of(imported)
                    assert here is not None and here in ALLOWED, f"{importer}: unknown layer {here}"
                    wrong_layer = there is not None and there not in ALLOWED[here]
                    wrong_plugin = top == "step_audio2_sglang" and imported not in PLUGIN_SHARED
                    if wrong_layer or wrong_plugin:
                        found.append(f"{importer} -> {imported}")
                elif importer.startswith("step_audio2_sglang") and top == "realtime":
                    found.append(f"{importer} -> {imported}")
    return found


def import_cycles(root: Path, packages: Iterable[str]) -> list[list[str]]:
    """Strongly connected groups of modules (size > 1) in the project's import graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            graph[module_name(path, root)] = set()
    for package in packages:
        for path in (root / package).rglob("*.py"):
            graph[module_name(path, root)] = {m for m in imported_modules(path, root) if m in graph}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_packages_exist() -> None:
    for package in PACKAGES:
        assert _modules(package), package


@pytest.mark.parametrize("path", _modules("streaming_parser"), ids=lambda p: str(p.relative_to(ROOT)))
def test_streaming_parser_imports_only_stdlib_and_itself(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | {"streaming_parser", "__future__"}
    assert imports_of(path) - allowed == set()


@pytest.mark.parametrize("path", _modules("token2wav"), ids=lambda p: str(p.relative_to(ROOT)))
def test_token2wav_never_imports_the_server_stack(path: Path) -> None:
    assert imports_of(path) & TOKEN2WAV_FORBIDDEN == set()


def test_realtime_imports_point_one_way_and_the_plugin_stays_apart() -> None:
    assert layering_violations(ROOT, PACKAGES) == []


def test_no_import_cycle_anywhere() -> None:
    assert import_cycles(ROOT, PACKAGES) == []


def test_the_plugin_placeholder_module_is_torch_free() -> None:
    assert imports_of(ROOT / "step_audio2_sglang" / "placeholders.py") <= {"__future__", "collections"}


def test_the_checker_sees_nested_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("import os.path\nfrom json import loads\n\ndef f():\n    import asyncio\n")
    assert imports_of(source) == {"os", "json", "asyncio"}


def test_the_checker_fails_on_an_upward_import_and_on_a_cycle(tmp_path: Path) -> None:
    """A tree that breaks both rules: wire imports session (upward), session <-> speech via a lazy import."""
    files = {
        "realtime/__init__.py": "",
        "realtime/errors.py": "",
        "realtime/wire/__init__.py": "",
        "realtime/wire/codec.py": "from realtime.session.state import State\n",
        "realtime/session/__init__.py": "",
        "realtime/session/state.py": "from realtime.speech import runtime\nfrom realtime.errors import X\n",
        "realtime/speech/__init__.py": "",
        "realtime/speech/runtime.py": "def f():\n    from realtime.session.state import State\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layering_violations(tmp_path, ["realtime"]) == [
        "realtime.speech.runtime -> realtime.session.state",
        "realtime.wire.codec -> realtime.session.state",
    ]
    assert import_cycles(tmp_path, ["realtime"]) == [["realtime.session.state", "realtime.speech.runtime"]]
