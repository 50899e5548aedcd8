"""The docs cannot drift from the code: the map, the § references, the flags in tables, the generated tables.

- every module of ``realtime/`` is in docs/ARCHITECTURE.md §1.2, every top-level package in ARCHITECTURE.md §1.1,
  and every module or path the docs name exists;
- every ``§`` reference in code and docs resolves to a heading of the document it names, and every
  quoted README heading named after the word README (as in ``README`` + ``"Context length"``) to a heading;
- every flag in a README/docs table is a flag of the ``realtime`` command (or of the named other program);
- the tables generated from the settings' declarations (tests/support/doc_tables.py) are current.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime.cli import build_parser
from tests.support import doc_tables

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "ARCHITECTURE.md"
PACKAGES = ("realtime", "streaming_parser", "token2wav", "step_audio2_sglang", "web_demo", "tests")
CITING_SUFFIXES = (".py", ".md", ".js", ".html", ".toml", ".cfg")
NUMBER = r"\d+(?:\.\d+)*"
# A doc name, then one or more section numbers: "docs/SGLANG.md §6.2-§6.4", "[PROTOCOL.md §4.5, §10](...)".
SECTION_REF = re.compile(
    rf"(?:\b(?P<doc>[A-Z][A-Z0-9_]+)(?:\.md)?\]?\s*)?(?P<numbers>§{NUMBER}(?:[\s#]*(?:,|-|–|/|and|or)[\s#]*§?{NUMBER})*)"
)
HEADING = re.compile(rf"^#+ §({NUMBER})\b", re.M)
README_REF = re.compile(r"""README\s+(?:"([^"]+)"|'([^']+)')""")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
DOC_PATH = re.compile(
    r"`((?:realtime|token2wav|streaming_parser|step_audio2_sglang|tests|web_demo|docs)/[^`\s]*)`"
)
# Flags in doc tables that belong to other programs, by program (checked: their --help).
FOREIGN_FLAGS = {
    "sglang.launch_server": {
        "--skip-tokenizer-init", "--incremental-streaming-output", "--max-total-tokens", "--trust-remote-code",
        "--sleep-on-idle", "--load-format", "--api-key", "--admin-api-key",
    },
    "smg (SGLang Model Gateway)": {
        "--policy", "--routing-key-override", "--health-check-interval-secs", "--health-failure-threshold",
        "--retry-max-retries", "--cb-failure-threshold",
    },
}  # fmt: skip


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split() if (ROOT / name).is_file()]


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def section(text: str, heading: str) -> str:
    """The body of the Markdown section whose heading line starts with ``heading``."""
    start = text.index(heading)
    level = heading.split()[0]
    rest = text[start + len(heading) :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def map_rows(body: str) -> Iterator[tuple[str, str]]:
    """(first cell, whole row) of every table row of a map section."""
    for line in body.splitlines():
        if line.startswith("| `"):
            yield line.split("|")[1], line


def listed_modules() -> tuple[set[str], dict[str, set[str]]]:
    """The modules of docs/ARCHITECTURE.md §1.2: the top-level ones (``config.py``) and those of each package row (``session/``)."""
    top: set[str] = set()
    by_package: dict[str, set[str]] = {}
    for first, row in map_rows(section(ARCHITECTURE.read_text(encoding="utf-8"), "### \N{SECTION SIGN}1.2")):
        keys = re.findall(r"`([^`]+)`", first)
        if keys and keys[0].endswith("/"):
            by_package.setdefault(keys[0], set()).update(re.findall(r"`([\w/]+\.py)`", row))
        else:
            top.update(key for key in keys if key.endswith(".py"))
    return top, by_package


def test_every_realtime_module_is_in_the_architecture_map() -> None:
    top, by_package = listed_modules()
    missing = []
    for path in sorted((ROOT / "realtime").rglob("*.py")):
        relative = path.relative_to(ROOT / "realtime")
        if len(relative.parts) == 1:
            if relative.name not in top:
                missing.append(f"realtime/{relative}")
            continue
        if relative.name == "__init__.py":
            continue  # a sub-package's own row stands for its __init__
        package = "/".join(relative.parts[:-1]) + "/"
        if relative.name not in by_package.get(package, set()):
            missing.append(f"realtime/{relative}")
    assert missing == [], (
        f"docs/ARCHITECTURE.md §1.2 does not list these modules (add them to their row): {missing}"
    )


def test_the_map_names_only_modules_that_exist() -> None:
    top, by_package = listed_modules()
    stale = [f"realtime/{name}" for name in sorted(top) if not (ROOT / "realtime" / name).is_file()]
    for package, names in sorted(by_package.items()):
        assert (ROOT / "realtime" / package).is_dir(), (
            f"ARCHITECTURE.md §1.2 has a row for realtime/{package}, which is gone"
        )
        stale += [
            f"realtime/{package}{name}"
            for name in sorted(names)
            if not (ROOT / "realtime" / package / name).is_file()
        ]
    assert stale == [], f"docs/ARCHITECTURE.md §1.2 names modules that do not exist: {stale}"


def test_every_package_is_in_the_top_level_map() -> None:
    rows = dict(map_rows(section(ARCHITECTURE.read_text(encoding="utf-8"), "### \N{SECTION SIGN}1.1")))
    listed = {re.findall(r"`([^`]+)`", first)[0].rstrip("/") for first in rows}
    assert set(PACKAGES) <= listed, f"docs/ARCHITECTURE.md §1.1 misses packages: {set(PACKAGES) - listed}"
    stale = []
    for first, row in rows.items():
        package = re.findall(r"`([^`]+)`", first)[0]
        stale += [
            package + name
            for name in re.findall(r"`(\w+\.py)`", row)
            if not (ROOT / package / name).is_file()
        ]
    assert stale == [], f"docs/ARCHITECTURE.md §1.1 names modules that do not exist: {stale}"


def test_every_path_the_docs_name_exists() -> None:
    missing = []
    for path in markdown_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in DOC_PATH.finditer(line):
                named = match[1]
                if any(mark in named for mark in "<*{"):  # a pattern, not a path
                    continue
                if not (ROOT / named.split(":")[0].split("#")[0]).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {named}")
    assert missing == [], f"the docs name files that do not exist: {missing}"


def headings() -> dict[str, set[str]]:
    return {path.stem: set(HEADING.findall(path.read_text(encoding="utf-8"))) for path in DOCS.glob("*.md")}


def test_every_section_reference_resolves() -> None:
    known = headings()
    broken = []
    for path in tracked_files():
        if path.suffix not in CITING_SUFFIXES or path.is_relative_to(ROOT / "tests" / "data"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        own_doc = path.stem if path.parent == DOCS and path.suffix == ".md" else None
        for match in SECTION_REF.finditer(text):  # over the whole text: a reference may wrap a line
            line_start = text.rfind("\n", 0, match.start()) + 1
            if path.suffix == ".md" and text.startswith("#", line_start):
                continue  # a heading defines its number
            doc = match["doc"] or own_doc
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
            if doc is None:
                broken.append(f"{where}: {match['numbers']} names no document")
            elif doc not in known:
                broken.append(f"{where}: {doc} is not a document in docs/")
            else:
                broken += [
                    f"{where}: {doc}.md has no §{cited}"
                    for cited in re.findall(NUMBER, match["numbers"])
                    if cited not in known[doc]
                ]
    assert broken == [], "§ references that do not resolve:\n" + "\n".join(broken)


def test_every_readme_heading_reference_resolves() -> None:
    readme_headings = {
        line.lstrip("#").strip()
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("#")
    }
    broken = []
    for path in tracked_files():
        if path.suffix not in CITING_SUFFIXES:
            continue
        for match in README_REF.finditer(path.read_text(encoding="utf-8", errors="replace")):
            if (match[1] or match[2]) not in readme_headings:
                broken.append(f"{path.relative_to(ROOT)}: README {match[0][7:]}")
    assert broken == [], f"references to README headings that do not exist: {broken}"


def realtime_flags() -> set[str]:
    """Every flag of every ``realtime`` command and benchmark."""
    flags: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return flags


def test_every_flag_in_a_doc_table_exists() -> None:
    known = realtime_flags() | set().union(*FOREIGN_FLAGS.values())
    unknown = []
    for path in markdown_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("|"):
                unknown += [
                    f"{path.relative_to(ROOT)}:{number}: {flag}"
                    for flag in FLAG.findall(line)
                    if flag not in known
                ]
    assert unknown == [], f"flags in doc tables that no command has: {unknown}"


@pytest.mark.parametrize("name", doc_tables.GENERATED_IN)
def test_generated_settings_tables_are_current(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert doc_tables.sections_in(text), f"{name} has no generated settings table"
    assert doc_tables.render(text) == text, f"{name}: a settings table is stale: run `make docs`"
