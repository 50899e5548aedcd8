"""Log filters: secrets never reach a log line, and a client's transport fault is one line, not a traceback.

`RedactSecrets` rewrites every record on its way to a handler (uvicorn's access and ``WebSocket ... [accepted]``
lines, ours, the libraries'): the value of any query parameter that carries a credential (``api_key=``,
``key=``, ``client_secret=``, ``token=``...), ``Bearer`` tokens, ``api-key`` header values, the key inside the
``openai-insecure-api-key.KEY`` subprotocol, ephemeral keys (``ek_...``) and OpenAI-style keys (``sk-...``)
become ``[REDACTED]``. It works on the message and each argument separately, so formatters that read
``record.args`` (uvicorn's access formatter) keep working.

`OneLineClientFaults` turns the tracebacks uvicorn logs for a client's malformed input (a WebSocket text frame
that is not UTF-8, closed 1007) into one line, counted in ``/metrics``.

`install_log_filters` puts both where they take effect: a handler filter sees records propagated from child
loggers, a logger filter only those logged on that logger itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[REDACTED]"
# names of query parameters (and form fields) whose value is a credential
_SECRET_PARAMS = r"api[_-]?key|key|token|access[_-]?token|client[_-]?secret|secret|password|ephemeral[_-]?key"
# a %-style placeholder is not a secret: `key=%s` in a format string keeps its argument (redacted in turn)
_NOT_PLACEHOLDER = r"(?!%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%])"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(rf"(?i)((?:^|[?&;\s\"'(,])(?:{_SECRET_PARAMS})=){_NOT_PLACEHOLDER}[^&;#\s\"'\])]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(rf"(?i)(\"(?:{_SECRET_PARAMS})\"\s*:\s*\"){_NOT_PLACEHOLDER}[^\"]+"), rf"\1{REDACTED}"),
    (re.compile(rf"(?i)(\bbearer\s+){_NOT_PLACEHOLDER}[^\s\"',;]+"), rf"\1{REDACTED}"),
    (re.compile(rf"(?i)(\bapi-key[\"']?\s*[:=]\s*[\"']?){_NOT_PLACEHOLDER}[^\s\"',;&]+"), rf"\1{REDACTED}"),
    (re.compile(rf"(openai-insecure-api-key\.){_NOT_PLACEHOLDER}[^\s\"',;]+"), rf"\1{REDACTED}"),
    (re.compile(r"\bek_[A-Za-z0-9_-]{6,}"), f"ek_{REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), f"sk-{REDACTED}"),
)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
INVALID_UTF8_MESSAGE = "Invalid UTF-8 sequence received from client."  # uvicorn's websockets-sansio line


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    return value


class RedactSecrets(logging.Filter):
    """Redacts credentials in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact_value(arg) for arg in args)
        elif isinstance(args, dict):
            record.args = {key: _redact_value(value) for key, value in args.items()}
        return True


class OneLineClientFaults(logging.Filter):
    """Drops the traceback of uvicorn's "invalid UTF-8 from client" error and counts it.

    Args:
        count: called with the fault's kind (``invalid_utf8``) for each one.
    """

    def __init__(self, count: Callable[[str], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == INVALID_UTF8_MESSAGE:
            self._count("invalid_utf8")
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "A WebSocket client sent a text frame that is not UTF-8; closed with 1007."
        return True


def install_log_filters(count_fault: Callable[[str], None], loggers: Iterable[str] = UVICORN_LOGGERS) -> None:
    """Add `RedactSecrets` to every handler of the root logger and of uvicorn's loggers, and
    `OneLineClientFaults` to ``uvicorn.error``. Call it after uvicorn configured its logging (its ``Config``
    does); calling it again adds nothing twice."""
    redactor = RedactSecrets()
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in loggers)):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(redactor)
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OneLineClientFaults) for f in error_log.filters):
        error_log.addFilter(OneLineClientFaults(count_fault))
