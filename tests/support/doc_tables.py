"""The docs' tables of settings, generated from their declarations; ``make docs`` rewrites them.

A generated block in a Markdown file is an HTML comment pair around a table::

    <!-- generated: settings limits -->
    | flag | env | default | what it does; what a client sees |
    ...
    <!-- /generated -->

`render` replaces each block's body with `realtime.settings.markdown_table` of the named `Section`
(``limits`` -> ``Section.LIMITS``); tests/test_docs.py fails while a file differs from its rendering. Run
``python -m tests.support.doc_tables`` (``make docs``) after changing a setting.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from realtime.config import ServerConfig
from realtime.settings import Section, markdown_table

ROOT = Path(__file__).resolve().parents[2]
GENERATED_IN = ("README.md", "docs/SGLANG.md")
BLOCK = re.compile(
    r"(?P<open><!-- generated: settings (?P<section>\w+) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)",
    re.S,
)


def sections_in(text: str) -> list[str]:
    """The section names of the generated blocks in ``text``, in order."""
    return [match["section"] for match in BLOCK.finditer(text)]


def render(text: str) -> str:
    """``text`` with every generated block's table made again from the declarations.

    Raises:
        KeyError: a block names a section that does not exist.
    """

    def table(match: re.Match[str]) -> str:
        section = Section[match["section"].upper()]
        return match["open"] + markdown_table(ServerConfig, section) + match["close"]

    return BLOCK.sub(table, text)


def main() -> int:
    """Rewrite the generated blocks of `GENERATED_IN`; print the files that changed."""
    for name in GENERATED_IN:
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        rendered = render(text)
        if rendered != text:
            path.write_text(rendered, encoding="utf-8")
            print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
