"""Event logs on stdout: one line per event, JSON unless stdout is a terminal.

Records are event names with fields passed as ``extra``:
``log.info("room.joined", extra={"room": name, "client_id": cid})``.
"""

import json
import logging
import os
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


class EventStreamHandler(logging.StreamHandler[TextIO]):
    """Writes event lines to a stream until its reader goes away (a closed pipe),
    then says so once on stderr and drops the lines after: logging's own handler
    printed a traceback on stderr for each of them."""

    is_reader_gone = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, unless the stream's reader is gone."""
        if not self.is_reader_gone:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A closed pipe ends the log; any other failure is logging's to report."""
        error = sys.exc_info()[1]
        if not isinstance(error, BrokenPipeError):
            super().handleError(record)
            return

        self.is_reader_gone = True
        _discard(self.stream)
        try:
            sys.stderr.write(
                f"mixer-console: the log's reader went away ({error.strerror}); "
                "the relay goes on without a log\n"
            )
        except OSError:
            pass  # stderr went with it (both to one pipe)


def _discard(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null, so that the lines still in its
    buffer, flushed at exit, do not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):
        pass  # a stream without a descriptor: nothing is flushed to it at exit


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

    handler = EventStreamHandler(stream)
    handler.setFormatter(
        TextEventFormatter() if log_format == "text" else JsonEventFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
