"""The broker's logs: one JSON object a line on stderr, and an access line per request.

A log collector parses JSON lines without a grammar per message, and a field
(``route``, ``status``) is queried by name.  What goes into a line is chosen
here, not by each caller: the access line names the route's *template*
(``/v1/cases/{case_id}``), never the path, because case and device ids are
metadata the broker otherwise keeps to itself; never a query string, a header
or a body.  ``--log-format text`` prints the same lines for a person at a
terminal.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from caseline.server import routes

#: Where the access lines go: one per answered request.
ACCESS_LOG: Final = logging.getLogger("caseline.server.access")
FORMATS: Final = ("json", "text")

#: A ``LogRecord``'s own attributes: anything else on a record came as ``extra`` and is a field.
_RECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields a caller attached: the structured part of a line."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


def rfc3339(created: float) -> str:
    stamp = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line; an exception is named by its kind, never its text (it may quote input)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


class TextLogFormatter(logging.Formatter):
    """The same lines for a person: time, level, message, then the fields as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{rfc3339(record.created)} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" error={record.exc_info[0].__name__}"
        return f"{line} {extra}".rstrip()


def logging_json() -> bool:
    """Is stderr a JSON-lines log now (``serve``)?  Then a fatal error goes there as a JSON line too."""
    return any(isinstance(h.formatter, JsonLogFormatter) for h in logging.getLogger().handlers)


def configure_logging(log_format: str = "json") -> None:
    """Every logger to stderr in ``log_format``; replaces whatever handlers were there."""
    handler = logging.StreamHandler()
    handler.setFormatter(TextLogFormatter() if log_format == "text" else JsonLogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


#: A random id per request, made on first use: the access line and any error logged for it share it.
REQUEST_ID: Final = web.RequestKey("request_id", str)


def request_id(request: web.BaseRequest) -> str:
    """The request's id: random, so it names neither the device nor the session."""
    if REQUEST_ID not in request:
        request[REQUEST_ID] = secrets.token_hex(8)
    return request[REQUEST_ID]


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: one structured line per answer, built from a fixed list of fields."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route, source = "unmatched", "unknown"
        if (
            isinstance(request, web.Request) and request._match_info is not None
        ):  # else refused before routing
            route = routes.route_name(request)
            source = routes.source(request)
        self.logger.info(
            "%s %s %d",
            request.method,
            route,
            response.status,
            extra={
                "event": "access",
                "method": request.method,
                "route": route,
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "bytes": response.body_length,
                "source": source,
                "request_id": request_id(request),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
