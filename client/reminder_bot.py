"""``caseline remind``: a bot that reminds before request deadlines, by post or by command.

The plan (client/reminders.py) is pure; this is its shell.  What was already
given is kept sealed in the bot's profile before it is given (a reminder is
never given twice: a crash between the two loses it, a command that fails is
logged and not run again).  A posted reminder also carries its key as the
post's idempotency key, so the outbox never posts it twice either.

Long-running, the bot follows its cases (the stream stores every event, so the
request index is current) and sleeps until the earlier of the next reminder's
moment and the next event: no polling.  A command gets the row as JSON on its
standard input and its argv as given, never through a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from caseline.client.reminders import Threshold, key, next_wake, plan, text_of
from caseline.client.workflow import RequestRow, row_json
from caseline.schemas.errors import BrokerUnavailable
from caseline.schemas.handling import format_time

if TYPE_CHECKING:
    from caseline.client.client import Client

log = logging.getLogger("caseline.client")
Deliver = Callable[[RequestRow, str], Awaitable[None]]
#: How long a reminder command may run before it is stopped (s).
COMMAND_TIMEOUT_S: Final = 60.0


def poster(client: Client) -> Deliver:
    """Deliver a reminder as a ``reminder`` update in the request's case, marked at least as it is."""

    async def deliver(row: RequestRow, label: str) -> None:
        markings: dict[str, Any] = {}
        if row.handling:
            markings["handling"] = row.handling
        if row.tlp:
            markings["tlp"] = row.tlp
        if row.restriction_codes:
            markings["restriction_codes"] = list(row.restriction_codes)
        fields: dict[str, Any] = {
            "of": row.request_id.hex(),
            "due": format_time(row.deadline),
            "text": text_of(row, label),
        }
        if markings:
            fields["markings"] = markings
        await client.post_typed(row.case_id, "reminder", fields, idempotency_key=key(row, label))

    return deliver


def runner(argv: Sequence[str], clock: Callable[[], int]) -> Deliver:
    """Deliver a reminder by running ``argv`` with the row (and ``label``) as JSON on its stdin."""

    async def deliver(row: RequestRow, label: str) -> None:
        document = {**row_json(row, clock()), "reminder": label}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.error("the reminder command could not be started: %s", exc.strerror or type(exc).__name__)
            return
        try:
            await asyncio.wait_for(proc.communicate(json.dumps(document).encode()), COMMAND_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("the reminder command for request #%d ran too long and was stopped", row.seq)
            return
        if proc.returncode:
            log.error("the reminder command for request #%d failed (exit %d)", row.seq, proc.returncode)

    return deliver


async def remind(
    client: Client,
    thresholds: Sequence[Threshold],
    deliver: Deliver,
    *,
    once: bool,
    changed: asyncio.Event | None = None,
) -> int:
    """Give the reminders that are due; unless ``once``, keep going as time passes and events arrive.

    ``changed`` is set whenever new events were stored; by default a ``follow``
    of every case sets it.  Returns how many reminders were given (``once``).
    """
    given = 0
    await client.sync_changed()  # brings the cases that changed up to date, and so their index
    done = await client.reminded()
    watcher: asyncio.Task[None] | None = None
    if not once and changed is None:
        changed = asyncio.Event()
        watcher = asyncio.create_task(_watch(client, changed))
    try:
        while True:
            if changed is not None:
                changed.clear()
            now = client.clock()
            due = await client.due(now)
            rows = [*due.owe, *due.owed]
            todo, settled = plan(rows, thresholds, done=done, now=now)
            if settled:
                done |= set(settled)
                await client.keep_reminded(done)  # before giving them: never twice
            for row, label in todo:
                await deliver(row, label)
                given += 1
            if once or changed is None:
                return given
            wake = next_wake(rows, thresholds, done=done, now=now)
            await _until(changed, None if wake is None else (wake - now) / 1000, watcher)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch(client: Client, changed: asyncio.Event) -> None:
    async for _ in client.follow():
        changed.set()


async def _until(changed: asyncio.Event, seconds: float | None, watcher: asyncio.Task[None] | None) -> None:
    """Wait for an event or ``seconds``; a follow that ended (its error) ends the bot."""
    waiter = asyncio.ensure_future(changed.wait())
    pending: set[asyncio.Future[Any]] = {waiter}
    if watcher is not None:
        pending.add(watcher)
    try:
        await asyncio.wait(pending, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if watcher is not None and watcher.done():
        watcher.result()  # raises what ended the stream
        raise BrokerUnavailable("the broker's case stream ended")  # pragma: no cover - follow reconnects
