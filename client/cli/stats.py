"""``caseline stats``: reciprocity figures per partner agency, on screen, as CSV or JSON, or a chart.

The figures come from ``caseline.client.reciprocity`` (pure); this module
reads the options, asks the client for its request index (synced first,
unless ``--offline``), and prints.  The reciprocity module and matplotlib
are imported only when the command runs, and matplotlib only for
``--chart``, so no other command pays for them at start-up.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from caseline.client.cli.files import refuse_existing, write_private
from caseline.client.cli.output import Out, safe
from caseline.client.cli.settings import command, run, settings
from caseline.schemas.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from caseline.client.reciprocity import Figures

FORMATS: Final = ("table", "csv", "json")
#: CSV columns, in order; a refusal ground gets a ``refused_<ground>`` column after these.
COLUMNS: Final = (
    "partner", "direction", "category", "requests", "answered", "refused", "open", "overdue",
    "median_seconds", "p90_seconds", "on_time", "within_article5",
)  # fmt: skip


def parse_date(text: str, option: str) -> int:
    """A date (``2026-01-01``, midnight UTC) or an RFC 3339 time, as ms since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: give a date such as 2026-01-01, or 2026-01-01T08:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def duration_text(seconds: float | None) -> str:
    """``2d 4h``, ``5h 12m``, ``12m``, ``40s``: the two largest units a person reads at a glance."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def share_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def refusal_grounds() -> tuple[str, ...]:
    """The Article 6 grounds an ack may give, from the ack schema itself: one column each."""
    from caseline.schemas.content import load_schema  # noqa: PLC0415 - with the command

    return tuple(load_schema("ack")["properties"]["ground"]["enum"])


def csv_text(figures: list[Figures]) -> str:
    """RFC 4180 CSV, one row per partner x direction x category, header first; times in seconds."""
    grounds = refusal_grounds()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*COLUMNS, *(f"refused_{g}" for g in grounds)])
    for f in figures:
        row = dataclasses.asdict(f)
        writer.writerow(
            [*("" if row[c] is None else row[c] for c in COLUMNS), *(f.refusals.get(g, 0) for g in grounds)]
        )
    return buffer.getvalue()


def json_document(
    figures: list[Figures], *, agency: str, now: int, since: int | None, until: int | None
) -> dict[str, Any]:
    from caseline.schemas.handling import format_time  # noqa: PLC0415 - with the command

    def at(ms: int | None) -> str | None:
        return None if ms is None else format_time(ms)

    return {
        "agency": agency,
        "computed_at": at(now),
        "since": at(since),
        "until": at(until),
        "figures": [dataclasses.asdict(f) for f in figures],
    }


def show_table(out: Out, figures: list[Figures], agency: str) -> None:
    """One small table per partner and direction, so that it fits an 80-column terminal."""
    from rich import box  # noqa: PLC0415 - rich is loaded by Out anyway; the table only here
    from rich.table import Table  # noqa: PLC0415

    if not figures:
        out.say("no requests between your agency and a partner in this period")
        return
    groups: dict[tuple[str, str], list[Figures]] = {}
    for f in figures:
        groups.setdefault((f.partner, f.direction), []).append(f)
    for (partner, direction), rows in groups.items():
        title = (
            f"{safe(partner)} answers {safe(agency)}"
            if direction == "sent"
            else f"{safe(agency)} answers {safe(partner)}"
        )
        table = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 1, 0, 0),
            pad_edge=False,
        )
        table.add_column("category", no_wrap=True)
        for name in ("asked", "answered", "median", "p90", "on time", "Art. 5", "open", "overdue"):
            table.add_column(name, justify="right", no_wrap=True)
        refusals: dict[str, int] = {}
        for f in rows:
            if f.category == "all":
                refusals = f.refusals
            table.add_row(
                f"[bold]{f.category}[/]" if f.category == "all" else f.category,
                str(f.requests),
                str(f.answered),
                duration_text(f.median_seconds),
                duration_text(f.p90_seconds),
                share_text(f.on_time),
                share_text(f.within_article5),
                str(f.open),
                f"[bold red]{f.overdue}[/]" if f.overdue else "0",
                end_section=len(rows) > 1 and f is rows[-2],
            )
        out.show(table)
        if refusals:
            grounds = ", ".join(f"{ground} {count}" for ground, count in refusals.items())
            out.say(f"refused {sum(refusals.values())}: {safe(grounds)}")
        out.say("")
    out.say(
        "[dim]median, p90: answer time (nearest rank).  on time: answered by the deadline in force,"
        " extensions counted.  Art. 5: by the Article 5 deadline, extensions not counted.[/]"
    )


def register(root: click.Group) -> None:
    """Add ``stats`` to the ``caseline`` group."""

    @command(root, "stats")
    @click.option(
        "--partner", "partners", multiple=True, metavar="AGENCY",
        help="Only this partner agency (repeat for more; default: every partner).",
    )  # fmt: skip
    @click.option("--since", metavar="DATE", help="Only requests whose deadline started on or after DATE.")
    @click.option("--until", metavar="DATE", help="Only requests whose deadline started before DATE.")
    @click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default=None,
        help="table on screen (the default), csv or json (--json is the same as --format json).",
    )  # fmt: skip
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
    @click.option(
        "--chart", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
        help="Also draw the median and p90 answer times and the on-time share as a PNG.",
    )  # fmt: skip
    @click.option("--force", is_flag=True, help="Replace --output or --chart if it exists.")
    @click.option("--offline", is_flag=True, help="Use what this device holds; do not ask the broker.")
    def stats(
        *,
        partners: tuple[str, ...],
        since: str | None,
        until: str | None,
        fmt: str | None,
        output: Path | None,
        chart: Path | None,
        force: bool,
        offline: bool,
    ) -> int:
        """Reciprocity: how fast each partner agency answers your requests, and you theirs.

        Per partner, category and direction: requests, answered, median and
        90th-percentile answer time, share answered on time (with extensions)
        and within the Article 5 deadline (without), open, overdue, and
        refusals by Article 6 ground.

        \b
        Examples:
          caseline stats --partner tz-tra --since 2026-01-01
          caseline stats --format csv -o reciprocity.csv
          caseline stats --json | jq '.figures[] | select(.category == "all")'
          caseline stats --chart reciprocity.png
        """
        s = settings()
        fmt = "json" if s.as_json and fmt is None else fmt or "table"
        start = parse_date(since, "--since") if since else None
        end = parse_date(until, "--until") if until else None
        if start is not None and end is not None and end <= start:
            raise UsageError("--until must be after --since")
        if fmt == "table" and output is not None:
            raise UsageError("--output takes --format csv or json; the table is for the screen")
        for path, option in ((output, "--output"), (chart, "--chart")):
            if path is not None:
                refuse_existing(path, force=force, option=option)
        if chart is not None and chart.suffix.lower() != ".png":
            raise UsageError(f"--chart {chart}: the chart is a PNG; give a name ending in .png")
        out = Out(fmt == "json")
        secret = s.unlock()

        async def act() -> tuple[str, list[Any]]:
            async with await s.client(secret) as client:
                if not offline:
                    await client.cases()  # brings every case up to date, and with it the index
                return (await client.identity()).agency_id, await client.requests()

        agency, rows = run(act())
        from caseline.client.reciprocity import reciprocity  # noqa: PLC0415 - with the command

        now = int(time.time() * 1000)
        figures = reciprocity(rows, agency=agency, now=now, partners=partners, since=start, until=end)
        if chart is not None:
            from caseline.client.cli.chart import draw  # noqa: PLC0415 - matplotlib only for --chart

            write_private(chart, draw(figures, agency), force=force)
        if fmt == "table":
            show_table(out, figures, agency)
            return EXIT_OK
        text = (
            csv_text(figures)
            if fmt == "csv"
            else json.dumps(json_document(figures, agency=agency, now=now, since=start, until=end), indent=2)
            + "\n"
        )
        if output is not None:
            write_private(output, text.encode(), force=force)
        else:
            click.echo(text, nl=False)
        return EXIT_OK
