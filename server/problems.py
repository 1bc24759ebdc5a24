"""Every error leaves the broker as ``application/problem+json`` (RFC 9457).

The ``type`` is a stable URI ending in the error's code, the ``title`` a fixed
human phrase for that code, and ``detail`` our own message — never input echoed
back, never a stack trace.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web
from caseline.schemas import errors

TYPE_BASE: Final = errors.PROBLEM_TYPE_BASE
CONTENT_TYPE: Final = "application/problem+json"

#: Every problem code the broker answers with, and its title: from the error classes.
TITLES: Final = errors.problem_titles()

#: The code for an aiohttp ``HTTPException`` of each status (routing, methods, sizes).
HTTP_CODES: Final = {
    cls.status_hint: cls.code
    for cls in reversed(errors.catalogue())
    if issubclass(cls, errors.BrokerRefusal) and cls is not errors.BrokerRefusal
} | {400: "malformed", 413: "too-large"}


def problem(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "type": TYPE_BASE + code,
        "title": TITLES.get(code, TITLES["http-error"]),
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type=CONTENT_TYPE, headers=headers
    )
