"""Every error leaves the broker as ``application/problem+json`` (RFC 9457).

The ``type`` is a stable URI ending in the error's code, the ``title`` a fixed
human phrase for that code, and ``detail`` our own message — never input echoed
back, never a stack trace.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

TYPE_BASE: Final = "https://caseline.example/problems/"
CONTENT_TYPE: Final = "application/problem+json"

TITLES: Final = {
    "malformed": "Malformed request",
    "invalid-content": "Invalid content",
    "unsupported": "Unsupported",
    "verification-failed": "Verification failed",
    "bad-signature": "Bad signature",
    "decryption-failed": "Decryption failed",
    "untrusted": "Untrusted",
    "revoked": "Device revoked",
    "expired": "Expired",
    "not-member": "Not a member",
    "not-allowed": "Not allowed",
    "integrity": "Integrity check failed",
    "chain-broken": "Chain broken",
    "gap": "Gap",
    "replay": "Replay",
    "fork": "Fork",
    "conflict": "Conflict",
    "not-found": "Not found",
    "limit": "Limit exceeded",
    "rate-limited": "Too many requests",
    "unauthorized": "Authentication required",
    "forbidden": "Forbidden",
    "too-large": "Request too large",
    "unsupported-media-type": "Unsupported media type",
    "method-not-allowed": "Method not allowed",
    "storage-full": "Storage full",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
    "http-error": "HTTP error",
}

HTTP_CODES: Final = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
    507: "storage-full",
}


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
