"""The import layering of docs/ARCHITECTURE.md §1.3, checked mechanically on the source (AST), not by review.

`streaming_parser` is a pure library: standard library and itself only. `token2wav` is synchronous model
code: it may use torch and friends but never the server stack (asyncio, starlette, uvicorn, websockets,
realtime).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN2WAV_FORBIDDEN = frozenset({"asyncio", "starlette", "realtime", "uvicorn", "websockets"})


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in a file (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports are banned by ruff; treat them as the package itself
                names.add(path.relative_to(ROOT).parts[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


def test_packages_exist() -> None:
    assert _modules("streaming_parser")
    assert _modules("token2wav")


@pytest.mark.parametrize("path", _modules("streaming_parser"), ids=lambda p: str(p.relative_to(ROOT)))
def test_streaming_parser_imports_only_stdlib_and_itself(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | {"streaming_parser", "__future__"}
    assert imports_of(path) - allowed == set()


@pytest.mark.parametrize("path", _modules("token2wav"), ids=lambda p: str(p.relative_to(ROOT)))
def test_token2wav_never_imports_the_server_stack(path: Path) -> None:
    assert imports_of(path) & TOKEN2WAV_FORBIDDEN == set()


def test_the_checker_sees_nested_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("import os.path\nfrom json import loads\n\ndef f():\n    import asyncio\n")
    assert imports_of(source) == {"os", "json", "asyncio"}
