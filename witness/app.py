"""The witness's HTTP edge (aiohttp), thin: parse, hand to the core in a transaction, answer.

Routes:

* ``POST /add-checkpoint`` — c2sp.org/tlog-witness, answered exactly as the spec says
  (plain-text bodies; 409 carries ``text/x.tlog.size``; 200 carries cosignature lines).
* ``GET /<sha256-hex(origin)>/checkpoint`` — tlog-witness monitoring: the latest
  checkpoint cosigned for that log, with the log's signatures we verified and ours.
* ``GET /<sha256-hex(origin)>/equivocation`` — ours: 404 (problem+json) while none was
  seen, else 200 ``text/plain`` with two checkpoints the log signed for one size with
  different roots, each verifiable against the log's vkey::

      caseline-witness/equivocation
      note <byte length of A>
      <signed note A, as cosigned earlier>note <byte length of B>
      <signed note B, as received later>

  Each note is given by its exact length, so no separator can be confused with its text.
* ``GET /healthz`` — ``{"ok": true}``.

Our own routes answer errors as ``application/problem+json``; the tlog routes never do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from caseline.schemas.errors import PROBLEM_TYPE_BASE, VerificationError
from caseline.witness import core
from caseline.witness.store import WitnessStore

log = logging.getLogger("caseline.witness")


@dataclass(frozen=True)
class WitnessIdentity:
    """The cosigner: its key name and libsodium secret key (never logged)."""

    name: str
    secret_key: bytes

    def __repr__(self) -> str:
        return f"<WitnessIdentity {self.name}>"


IDENTITY = web.AppKey("identity", WitnessIdentity)
STORE = web.AppKey("store", WitnessStore)
CLOCK: web.AppKey[Callable[[], int]] = web.AppKey("clock")

PROBLEM_CONTENT_TYPE = "application/problem+json"
_ORIGIN_HASH = "{origin_hash:[0-9a-f]{64}}"


def _text(status: int, body: bytes, content_type: str = core.TEXT_CONTENT_TYPE) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


def _problem(status: int, code: str, title: str, detail: str) -> web.Response:
    body = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/problem+json"
    )


async def add_checkpoint(request: web.Request) -> web.Response:
    try:
        parsed = core.parse_request(await request.read())
    except VerificationError as exc:
        return _text(400, f"{exc}\n".encode())
    me = request.app[IDENTITY]
    now = request.app[CLOCK]()
    decide = partial(core.decide, parsed, name=me.name, secret_key=me.secret_key, now=now)
    outcome = await request.app[STORE].call(request.app[STORE].add_checkpoint, parsed, decide, now)
    if outcome.equivocation is not None:
        log.warning("equivocation by log %s at size %d", parsed.checkpoint.origin, parsed.checkpoint.size)
    return _text(outcome.status, outcome.body, outcome.content_type)


async def checkpoint(request: web.Request) -> web.Response:
    store = request.app[STORE]
    note = await store.call(store.latest_note, request.match_info["origin_hash"])
    if note is None:
        return _text(404, b"no checkpoint cosigned for this log\n")
    return _text(200, note)


async def equivocation(request: web.Request) -> web.Response:
    store = request.app[STORE]
    found = await store.call(store.equivocation, request.match_info["origin_hash"])
    if found is None:
        return _problem(404, "not-found", "Not found", "no equivocation seen for this log")
    body = b"caseline-witness/equivocation\n" + b"".join(b"note %d\n" % len(n) + n for n in found)
    return _text(200, body)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(
    store: WitnessStore, identity: WitnessIdentity, *, clock: Callable[[], int] = lambda: int(time.time())
) -> web.Application:
    """The witness application over an open store; ``clock`` gives POSIX seconds."""
    app = web.Application(client_max_size=core.MAX_BODY)
    app[STORE], app[IDENTITY], app[CLOCK] = store, identity, clock
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get(f"/{_ORIGIN_HASH}/checkpoint", checkpoint)
    app.router.add_get(f"/{_ORIGIN_HASH}/equivocation", equivocation)
    app.router.add_get("/healthz", healthz)

    async def close_store(app: web.Application) -> AsyncIterator[None]:
        yield
        store.close()

    app.cleanup_ctx.append(close_store)
    return app
