"""The log: one JSON object per line on stderr, from the first line a process writes.

Modules keep ``logging.getLogger(__name__)``; stdlib logging goes through structlog's
``ProcessorFormatter``, so third-party lines come out in the same format. Every line carries
``timestamp``, ``level``, ``logger`` and ``event``, plus what the edges bound with
``structlog.contextvars`` (``request_id``, ``call_id``, ``call_sid``, ``event_id``, ``consumer``)
and a stdlib call's ``extra`` fields.
Secrets never reach the line: values of secret-looking keys are masked, and signed-URL query strings,
URL passwords and bearer tokens are cut out of every string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# Chatty libraries start at WARNING: the Twilio SDK logs every REST request with its headers at INFO.
THIRD_PARTY = (
    "twilio",
    "aiokafka",
    "kafka",
    "botocore",
    "aiobotocore",
    "aioboto3",
    "boto3",
    "s3transfer",
    "urllib3",
    "httpx",
    "httpcore",
    "sqlalchemy",
    "aiosqlite",
    "asyncio",
    "alembic",
)

_SECRET_KEY = re.compile(r"(?i)(secret|token|password|passwd|authorization|api_key|signature|cookie)")
_SIGNED_QUERY = re.compile(
    r"(?i)([?&](?:X-Amz-[A-Za-z-]+|Signature|sig|token|AWSAccessKeyId|Expires|exp|Key-Pair-Id|Policy)=)"
    r"[^&\s\"'<>]*"
)
_URL_PASSWORD = re.compile(r"(://[^/\s:@\"']+):[^@\s/\"']+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """``text`` without signed-URL parameters, URL passwords or bearer/basic credentials."""
    text = _SIGNED_QUERY.sub(rf"\1{REDACTED}", text)
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def _redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if key != "event" and _SECRET_KEY.search(key) and value:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's duplicate of the message
    return event_dict


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.ExtraAdder(),  # a stdlib call's ``extra={"call_id": …}`` becomes a field
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_color_message,
]


def configure_logging(level: str = "INFO", levels: Mapping[str, str] | None = None) -> None:
    """Send every log line, stdlib and structlog, to stderr as JSON. ``levels``: per-logger levels
    that override the defaults (third-party loggers at WARNING). Safe to call again."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
    for name, logger_level in (levels or {}).items():
        logging.getLogger(name).setLevel(logger_level.upper())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught  # a crash is a JSON line too


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when the line is written (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("callrec").critical("uncaught exception", exc_info=(kind, error, traceback))
