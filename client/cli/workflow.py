"""``caseline due`` and ``caseline remind``: requests, their deadlines, and a bot that reminds.

Both read the request index the client keeps as it stores events
(client/workflow_index.py), so listing a thousand cases opens no event.  By
default ``due`` first brings up to date the cases whose broker count moved
(``Client.sync_changed``: one request, then a sync of only those); ``--offline``
skips even that.  Requests and acks are posted with ``caseline post``
(``--type request`` / ``--type ack``), whose forms say every field.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import click
from caseline.client.cli.output import Out, safe
from caseline.client.cli.settings import command, run, settings
from caseline.schemas.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from caseline.client.workflow import Due, RequestRow


def relative(ms: int) -> str:
    """``in 5h``, ``in 2d 3h``, ``OVERDUE 2h``: how far a deadline is, to the minute."""
    late = ms < 0
    minutes = abs(ms) // 60_000
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        text = f"{days}d {hours}h" if hours else f"{days}d"
    elif hours:
        text = f"{hours}h {mins}m" if mins else f"{hours}h"
    else:
        text = f"{mins}m"
    return f"OVERDUE {text}" if late else f"in {text}"


def local_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _line(out: Out, row: RequestRow, now: int) -> None:
    left = relative(row.deadline - now)
    urgency = f"[bold red]{left}[/]" if row.overdue(now) else left
    to = ",".join(row.to_agencies) or "-"
    out.head(
        [
            f"[bold]{row.case_id.hex()[:8]}[/] #{row.seq}",
            f"{row.from_agency} -> {to}",
            row.category,
            f"{local_time(row.deadline)} ({urgency})",
            row.state + (f" x{row.extensions}" if row.extensions else ""),
        ]
    )
    out.indented(safe(row.subject))


def register(root: click.Group) -> None:
    """Add ``due`` and ``remind`` to the ``caseline`` group."""

    @command(root, "due")
    @click.option("--case", "case_ref", metavar="CASE", help="Only this case.")
    @click.option("--overdue", is_flag=True, help="Only requests past their deadline.")
    @click.option("--offline", is_flag=True, help="Do not ask the broker: show what this device holds.")
    def due(case_ref: str | None, overdue: bool, offline: bool) -> int:
        """List open requests: what your agency owes and what others owe it, soonest deadline first.

        A request's deadline is EU Directive 2023/977 Art. 5's: 8 hours for
        urgent-direct, 3 calendar days for urgent-indirect, 7 for others, from
        when the broker (or, in a witnessed case, the witnesses) saw it, moved
        by any extension its recipient gave.

        \b
        Examples:
          caseline due
          caseline due --overdue
          caseline --json due | jq '.owe[] | select(.overdue)'
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> Due:
            from caseline.client.workflow import due_of  # noqa: PLC0415 - with the client

            async with await s.client(secret) as client:
                if case_ref is None:
                    if not offline:
                        await client.sync_changed()
                    return await client.due()
                case_id = await client.resolve_case(case_ref)
                if not offline:
                    await client.sync(case_id)
                whole = await client.due()
                rows = await client.requests(case_id)
                return due_of(rows, agency_id=whole.agency_id, now=whole.now)

        result = run(act())
        _print(out, result, overdue_only=overdue)
        return EXIT_OK

    @command(root, "remind")
    @click.option(
        "--before",
        multiple=True,
        metavar="DURATION",
        help="Remind this long before a deadline (30m, 2h, 1d); repeat. Overdue is always reminded once.",
    )
    @click.option("--post", "post_", is_flag=True, help="Post a reminder update in the request's case.")
    @click.option(
        "--exec", "exec_", is_flag=True, help="Run the command given after -- with the request as JSON."
    )
    @click.option("--once", is_flag=True, help="Give what is due now and stop (for cron).")
    @click.argument("argv", nargs=-1, metavar="[-- COMMAND ARG...]")
    def remind(before: tuple[str, ...], post_: bool, exec_: bool, once: bool, argv: tuple[str, ...]) -> int:
        """Remind before request deadlines: a bot with the reminder and read scopes.

        Each open request your agency owes or is owed is reminded once at each
        --before threshold and once when overdue; an extension arms them again.
        What was given is kept in the profile: a restart repeats nothing.

        \b
        Examples:
          caseline --profile reminder-bot remind --before 1d --before 2h --post
          caseline --profile reminder-bot remind --before 2h --exec -- notify-desk --channel ops
        """
        from caseline.client.reminders import parse_before  # noqa: PLC0415 - with the client

        if post_ == exec_:
            raise UsageError("give one of --post or --exec")
        if exec_ and not argv:
            raise UsageError("--exec needs the command after --, e.g. --exec -- notify-desk --channel ops")
        if post_ and argv:
            raise UsageError("a command after -- is for --exec")
        try:
            thresholds = [parse_before(b) for b in before]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> int:
            from caseline.client import reminder_bot  # noqa: PLC0415 - with the client

            async with await s.client(secret) as client:
                deliver = (
                    reminder_bot.poster(client) if post_ else reminder_bot.runner(list(argv), client.clock)
                )
                return await reminder_bot.remind(client, thresholds, deliver, once=once)

        given = run(act())
        if out.as_json:
            out.data({"reminded": given})
        else:
            out.say(f"{given} reminder{'' if given == 1 else 's'} given")
        return EXIT_OK


def _print(out: Out, result: Due, *, overdue_only: bool) -> None:
    from caseline.client.workflow import row_json  # noqa: PLC0415 - with the client

    now = result.now
    owe = [r for r in result.owe if r.overdue(now) or not overdue_only]
    owed = [r for r in result.owed if r.overdue(now) or not overdue_only]
    if out.as_json:
        # Compact, not ``Out.data``'s indented form: json's C encoder does not indent, and a
        # backlog of thousands of rows is read by a bot, not a person (``jq`` indents it).
        document = {
            "agency": result.agency_id,
            "now": row_json_time(now),
            "owe": [row_json(r, now) for r in owe],
            "owed": [row_json(r, now) for r in owed],
        }
        print(json.dumps(document, sort_keys=True, ensure_ascii=False))
        return
    for title, rows in ((f"{result.agency_id} owes", owe), (f"owed to {result.agency_id}", owed)):
        out.say(f"[bold]{title}[/] ({len(rows)})")
        if not rows:
            out.say("    nothing" + (" overdue" if overdue_only else " open"))
        for row in rows:
            _line(out, row, now)


def row_json_time(ms: int) -> Any:
    from caseline.client.workflow import rfc3339_ms  # noqa: PLC0415 - with the client

    return rfc3339_ms(ms)
