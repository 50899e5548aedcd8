"""Server-sent events framing: one ``data:`` line of compact JSON per event, as OpenAI's streams send them."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"  # the chat-completions end-of-stream marker


def sse_data(payload: dict[str, Any]) -> bytes:
    """One event: ``data: {json}`` and the blank line that ends it (JSON never contains a raw newline)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
