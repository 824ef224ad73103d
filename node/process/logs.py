"""How a peer process writes its log: text for people, or JSON lines for log collectors.

``setup_logging`` installs one stderr handler on the root logger with ``ContextFilter``,
which gives every record the request id and the peer of the work that logged it (from
``node.tracing``; a log call's own ``extra`` wins), and one of two formatters:

- ``text`` (the default): ``TIME LEVEL [TAG] LOGGER: MESSAGE``, with ``[req=ID]`` after the
  level when a request caused the line;
- ``json`` (``--log-format json``): one object per line, keys ``time`` (ISO 8601, UTC, ms),
  ``level``, ``peer`` (the peer's id; its address before it has one), ``logger``,
  ``event`` (the message), ``request_id`` when a request caused the line, ``name``,
  ``size`` (bytes) and ``duration`` (seconds) when the log call gave them (``extra=``;
  a file's name is passed as ``file``: ``name`` is the logger's), and ``exception``
  (the traceback) when there is one. Only the standard library: a formatter is a few lines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from node.tracing import PEER, REQUEST_ID

FORMATS = ("text", "json")
FIELDS = (("file", "name"), ("size", "size"), ("duration", "duration"))  # extra -> JSON key


class ContextFilter(logging.Filter):
    """Give each record ``request_id`` and ``peer`` from the context it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "peer", None) is None:
            record.peer = PEER.get()
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL [TAG] LOGGER: MESSAGE``, with ``[req=ID]`` for a request's lines."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s [{tag}]%(request)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request = f" [req={request_id}]" if request_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (the keys are in the module's docstring)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "peer": getattr(record, "peer", None) or self._tag,
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        for attribute, key in FIELDS:
            value = getattr(record, attribute, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(log_format: str, tag: str) -> logging.Formatter:
    """The formatter for ``--log-format`` (``FORMATS``); raises ValueError for another."""
    if log_format == "json":
        return JsonFormatter(tag)
    if log_format == "text":
        return TextFormatter(tag)
    raise ValueError(f"no log format {log_format!r}: one of {', '.join(FORMATS)}")


def setup_logging(level: str, tag: str, log_format: str = "text") -> None:
    """Log at ``level`` and above to stderr in ``log_format``; ``tag`` names this process
    in lines that carry no peer id (its address, or ``up``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(log_format, tag))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
