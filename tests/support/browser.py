"""Debian's chromium for the browser tests, headless, with a wav as its fake microphone (Playwright, sync API)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium(playwright: object, mic: Path) -> Iterator[object]:
    """Debian's chromium, headless, with ``mic`` (a wav, looped) as its fake microphone."""
    browser = playwright.chromium.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
        ],
    )
    try:
        yield browser
    finally:
        browser.close()
