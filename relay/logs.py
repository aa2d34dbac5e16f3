"""Event logs on stdout: one line per event, JSON unless stdout is a terminal.

Records are event names with fields passed as ``extra``:
``log.info("room.joined", extra={"room": name, "client_id": cid})``.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record is an event field.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields a record carries beyond the standard ones."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonEventFormatter(logging.Formatter):
    """Renders a record as one JSON object: time, level, event, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **event_fields(record),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)

        return json.dumps(line, default=str)


class TextEventFormatter(logging.Formatter):
    """Renders a record as ``time LEVEL event key=value ...`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={_text_value(value)}" for key, value in event_fields(record).items()
        )
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += " " + fields

        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)

        return line


def _text_value(value: object) -> str:
    text = str(value)
    # Quoted whenever a client's text could otherwise forge a field or a line.
    is_plain = text and all(c.isprintable() and c not in ' "=' for c in text)
    return text if is_plain else json.dumps(text)


# Libraries whose records are kept to warnings and errors.
QUIETED_LOGGERS = ("httpx2", "httpcore2", "httpx", "httpcore")


def configure_logging(
    level: str, log_format: str, stream: TextIO | None = None
) -> None:
    """Send every log record to stdout (or ``stream``), one line per event.

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        log_format: json, text, or auto (text when the stream is a terminal).
    """
    stream = stream or sys.stdout
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"

    # The HTTP client's own records carry the URLs and headers of requests to
    # GitHub: a login's code must not reach the log through them, even at DEBUG.
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        TextEventFormatter() if log_format == "text" else JsonEventFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
