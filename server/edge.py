"""The broker's TCP edge: connection limits, HTTP-parser errors, HTTP versions, descriptors.

aiohttp builds one ``RequestHandler`` (an asyncio protocol) per accepted
connection.  ``EdgeRequestHandler`` counts it against the per-source and
global connection limits (``admission.py``) before a byte of it is read, and
closes it at once when it is over either: a refused connection costs one
accept and one close.  Per-source connection counts use the TCP peer (an IPv6
peer by its /64).  Behind a reverse proxy every connection is the proxy's, and
the per-source limit would let a handful of clients' streams lock everyone else
out, so a peer in ``trusted_proxies`` is held only to the global limit (issue 14
review, finding 4): the proxy must limit connections per client itself, and
the per-source request limits still apply by the forwarded address.

The same handler answers requests aiohttp's parser refuses with problem+json
and a fixed detail: aiohttp's own answer is ``text/plain`` quoting the bad
bytes, and a malformed header line can carry a session token.  ``EdgeServer``
refuses every HTTP version but 1.0 and 1.1 (an HTTP/0.9 request line would
otherwise be served).  ``EdgeRunner`` is an ``AppRunner`` that builds these;
``app.make_runner`` is the one place that makes it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.web_protocol import RequestHandler
from caseline.server import problems
from caseline.server.admission import Admission, Refusal
from caseline.server.sources import IPNetwork, is_trusted_proxy, source_of

log = logging.getLogger("caseline.server")

#: What a request aiohttp's parser refused is told: the same words whatever it sent.
PARSE_ERROR_DETAIL: Final = "the request is not well-formed HTTP/1.1"
HTTP_VERSIONS: Final = frozenset({HttpVersion10, HttpVersion11})


class EdgeRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, counted against the connection limits."""

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._admission = manager.admission
        self._on_refused = manager.on_refused
        self._trusted = manager.trusted
        self._source: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else None
        source = source_of(host, None, ())
        refused = self._admission.admit(source, shared=is_trusted_proxy(host, self._trusted))
        if refused is not None:
            self._refused = True
            self._on_refused(refused)
            # Before any request is read: no answer, and no log line per refused connection.
            cast(asyncio.Transport, transport).abort()
            return
        self._source = source
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            self._manager = None
            return
        if self._source is not None:
            self._admission.release(self._source)
            self._source = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """problem+json with a fixed detail, never the input; the connection is closed after it."""
        super().handle_error(request, status, exc, message)  # logs (without the bytes) and checks
        if status >= 500:
            response = problems.problem(500, "internal", "the broker hit an internal error")
        else:
            code = problems.HTTP_CODES.get(status, "http-error")
            response = problems.problem(status, code, PARSE_ERROR_DETAIL)
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's low-level server, with ``EdgeRequestHandler`` and an HTTP-version check."""

    def __init__(
        self,
        handler: Any,
        *,
        connections: Admission,
        on_refused: Callable[[Refusal], None] = lambda _: None,
        trusted: tuple[IPNetwork, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.admission, self.on_refused, self.trusted = connections, on_refused, trusted
        self._app_handler = self.request_handler
        self.request_handler = self._versioned

    async def _versioned(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.version not in HTTP_VERSIONS:
            response = problems.problem(505, "http-error", "the broker speaks HTTP/1.0 and HTTP/1.1 only")
            response.force_close()
            return response
        return await self._app_handler(request)

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose server is an ``EdgeServer`` sharing one connection count."""

    def __init__(
        self,
        app: web.Application,
        *,
        connections: Admission,
        on_refused: Callable[[Refusal], None] = lambda _: None,
        trusted: tuple[IPNetwork, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.connections, self.on_refused, self.trusted = connections, on_refused, trusted

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # starts the app up, as AppRunner does
        return EdgeServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            connections=self.connections,
            on_refused=self.on_refused,
            trusted=self.trusted,
            loop=asyncio.get_running_loop(),
            **base._kwargs,
        )


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE: how many descriptors this process may hold now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one, so floods meet our limits, not EMFILE.

    Returns the (soft, hard) pair in force afterwards.  A system that refuses
    (some containers) keeps its soft limit; the broker then derives its
    connection limit from that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.warning("could not raise the descriptor limit from %d to %d", soft, hard)
    return resource.getrlimit(resource.RLIMIT_NOFILE)
