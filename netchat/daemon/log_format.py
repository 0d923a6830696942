"""Where and how a daemon's log goes: ``netchat run --log-file PATH --log-format json``.

- :class:`JsonFormatter`: one JSON object per line, ``time`` (UTC, ISO 8601 with
  milliseconds), ``level``, ``logger``, ``message``, and ``exception`` (the traceback
  text) when the record carries one (``stack`` for ``stack_info``). A message of
  several lines (a handler's traceback logged as text) stays on one line: JSON
  escapes its newlines.
- :func:`log_handler`: a handler for a file (reopened when logrotate moves it away:
  :class:`logging.handlers.WatchedFileHandler`) or for stderr, in the text or JSON
  format.
"""

import datetime
import json
import logging
import logging.handlers
import sys
from typing import Optional

__all__ = ["JsonFormatter", "log_handler", "TEXT_FORMAT", "FORMATS"]

#: The text format of the command-line tools' log lines.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What ``--log-format`` takes.
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry = {"time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_handler(path: Optional[str] = None, format: str = "text") -> logging.Handler:
    """A handler writing to ``path`` (appended to; None: stderr) in ``format``
    (``text`` or ``json``). Raises OSError when the file cannot be opened."""
    if format not in FORMATS:
        raise ValueError("log format %r: use one of %s" % (format, ", ".join(FORMATS)))
    if path is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter() if format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    return handler
