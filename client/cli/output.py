"""What the commands print: blocks and panels for a person, JSON for a script.

rich is imported only when something is printed for a person: it costs tens
of milliseconds of a command's start, and a script's ``--json`` post prints
none of it (issue 11).  The console follows the terminal's width; when
stdout is not a terminal, or NO_COLOR is set, the output is plain text — no
colour and no box drawing — so a pipe or a log gets words only.  Ids a
person must type (case ids, update ids, agency:user names) are never cut:
a record is a block — a head line of ids that wraps only between them, then
indented ``key: value`` lines whose text wraps between words — not a table
row, whose columns rich would narrow, cut or drop.
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from caseline.client.refs import short_id

if TYPE_CHECKING:
    from caseline.client.core import CaseEvent
    from caseline.client.watch import WitnessStatus
    from rich.console import Console, RenderableType

#: TLP labels as the FIRST standard colours them; CLEAR stays plain.
TLP_STYLE: Final = {"RED": "bold red", "AMBER": "yellow", "AMBER+STRICT": "bold yellow", "GREEN": "green"}
UNWITNESSED_LINE: Final = "UNWITNESSED: only the broker vouches for this history's order and time"


def printable(text: str, *, lines: bool = True) -> str:
    """``text`` with every control and format character shown as U+FFFD, newlines kept if ``lines``.

    Text from partners, the broker or a file reaches a terminal: an escape
    sequence in it could set the clipboard (OSC 52), retitle the window or
    overwrite a line already shown ("receipt verified"), and a bidi override
    could reverse what a line seems to say.  rich strips a few of these, not ESC.
    """
    return "".join(
        ch if (ch == "\n" and lines) or unicodedata.category(ch) not in ("Cc", "Cf") else "\ufffd"
        for ch in text
    )


def safe(text: str) -> str:
    """Text from elsewhere as rich markup that prints as itself: no markup, no control characters."""
    from rich.markup import escape  # noqa: PLC0415 - see the module docstring

    return escape(printable(text))


class Out:
    """Where a command prints: one JSON document, or rich output for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - see the module docstring

            self._console = Console(highlight=False)
        return self._console

    @property
    def plain(self) -> bool:
        """No colour and no box drawing: stdout is a pipe or a file, or NO_COLOR is set."""
        return not self.console.is_terminal or self.console.no_color

    def data(self, obj: Any) -> None:
        print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))

    def say(self, text: str, *, whole: bool = False) -> None:
        """A line of rich markup for a person: wrapped between words on a terminal, whole in a pipe.

        ``whole``: one line even on a terminal narrower than it (a key or hash
        split across lines cannot be compared or copied).
        """
        if self.as_json:
            return
        if whole:
            self.console.print(text, no_wrap=True, overflow="ignore", crop=False)
        else:
            self.console.print(text, soft_wrap=not self.console.is_terminal)

    def show(self, renderable: RenderableType) -> None:
        """A table or panel, laid out to the terminal's width (wrapping, not cutting)."""
        self.console.print(renderable, soft_wrap=False)

    def panel(self, text: str, title: str) -> None:
        """A boxed panel on a terminal; its title and lines, unboxed, in a pipe."""
        if self.plain:
            self.say(f"{title}:")
            for line in text.splitlines():
                self.say(f"  {line}")
            return
        from rich.panel import Panel  # noqa: PLC0415 - see the module docstring

        self.show(Panel(text, title=title))

    def indented(self, markup: str, indent: int = 4) -> None:
        """Lines of rich markup set in by ``indent``: wrapped between words on a terminal, whole when piped.

        A pipe gets each line as it is, unwrapped; a terminal gets lines wrapped
        to its width.  Neither gets trailing spaces: rich pads a Padding out to
        the console's width, which a log, a ``grep`` or a copied line carries.
        """
        if self.as_json:
            return
        if not self.console.is_terminal:
            for line in markup.splitlines():
                self.say(" " * indent + line)
            return
        from rich.text import Text  # noqa: PLC0415 - see the module docstring

        width = max(self.console.width - indent, 20)
        for wrapped in Text.from_markup(markup).wrap(self.console, width, overflow="fold"):
            wrapped.rstrip()
            self.console.print(Text(" " * indent) + wrapped, soft_wrap=True)

    def head(self, fields: Sequence[str]) -> None:
        """Fields of rich markup on one line, wrapped on a terminal only between fields.

        rich would wrap at any space, splitting ``2026-11-20 08:45:46Z`` or
        ``H3 TLP:RED``; a field here moves whole to the next line (indented by
        two), and one wider than the screen stands alone, uncut.  Piped: one line.
        """
        fields = [f for f in fields if f]
        if self.as_json:
            return
        if not self.console.is_terminal:
            self.say("  ".join(fields))
            return
        from rich.text import Text  # noqa: PLC0415 - see the module docstring

        lines: list[list[str]] = [[]]
        used = 0
        for field in fields:
            size = Text.from_markup(field).cell_len
            if lines[-1] and used + 2 + size > self.console.width:
                lines.append([])
                used = 2
            used += size + (2 if lines[-1] else 0)
            lines[-1].append(field)
        for number, line in enumerate(lines):
            self.say(("  " if number else "") + "  ".join(line), whole=True)

    def block(self, head: Sequence[str], details: Sequence[tuple[str, str]]) -> None:
        """One record as a head line of ids, then indented ``key: value`` lines.

        Not a table row: a table of six columns on 80 columns cuts its headers
        and squeezes free text to nothing, and drops columns when piped.  The head
        wraps between its fields (each id whole), a value between its words.
        """
        self.head(head)
        lines = [f"[bold]{key}:[/] {value}" for key, value in details if value]
        if lines:
            self.indented("\n".join(lines))


def entries(count: int, adjective: str = "") -> str:
    """``1 entry``, ``14 earlier entries``."""
    return " ".join(x for x in (str(count), adjective, "entry" if count == 1 else "entries") if x)


def when(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def tlp(label: str | None) -> str:
    """``TLP:RED`` with its colour as rich markup (the console drops colour when plain)."""
    if not label:
        return ""
    style = TLP_STYLE.get(label)
    return f"[{style}]TLP:{label}[/]" if style else f"TLP:{label}"


def markings(event: CaseEvent) -> dict[str, Any] | None:
    if event.content is None:
        return None
    found = event.content.get("markings")
    return found if isinstance(found, dict) else None


def marking_text(event: CaseEvent) -> str:
    """The handling code and coloured TLP of an update, e.g. ``H3 TLP:RED``."""
    return markings_text(markings(event))


def markings_text(m: dict[str, Any] | None) -> str:
    """``H3 TLP:RED`` from a content's ``markings`` (empty when it has none)."""
    if not m:
        return ""
    return " ".join(x for x in (safe(str(m.get("handling", ""))), tlp(m.get("tlp"))) if x)


def summary(event: CaseEvent) -> str:
    """The update in a few words: its text, or what kind of entry it is.  Never cut."""
    if event.kind == "commit":
        listed = ", ".join(
            f"{m.author.name} ({m.role}{', voided' if m.voided else ''})" for m in event.members
        )
        if event.voided_by is not None:
            return (
                f"VOIDED commit by {event.voided_by.name}, whose device was revoked by its agency: whom it"
                " added does not count, and nothing is posted until an owner re-keys the case;"
                f" members: {listed}"
            )
        return "members: " + listed
    if event.kind == "purged":
        return "(removed by the case's retention policy)"
    if event.kind == "voided":
        return "(withheld: its device was revoked by its agency, or added to the case by a revoked one)"
    if not event.readable or event.content is None:
        return "(sealed: this device holds no key for it)"
    c = event.content
    for key in ("text", "reason", "subject", "status"):
        value = c.get(key)
        if isinstance(value, str):
            return value
    if event.content_type == "seizure":
        goods = "; ".join(g.get("description", "?") for g in c.get("goods", []))
        return f"{goods} at {c.get('place', {}).get('name', '?')}"
    if event.content_type == "ack":
        return f"{c.get('level')} {str(c.get('of', ''))[:8]}"
    return json.dumps({k: v for k, v in c.items() if k not in ("markings", "lang")}, ensure_ascii=False)


def what(event: CaseEvent) -> str:
    """The summary, with a reply's target and an H3's restrictions on lines of their own."""
    lines = [safe(summary(event))]
    c = event.content or {}
    target = c.get("in_reply_to")
    if isinstance(target, str) and len(target) == 64:
        lines.insert(0, f"[dim]re {target[:8]}[/]")
    restrictions = (markings(event) or {}).get("restrictions")
    if restrictions:
        lines.append(f"[bold]restrictions:[/] {safe(str(restrictions))}")
    lines += [
        f"[bold]file {n}:[/] {safe(a.name)} ({safe(a.media_type)}, {size_text(a.size)})"
        for n, a in enumerate(event.attachments, start=1)
    ]
    return "\n".join(lines)


def size_text(n: float) -> str:
    """``812 B``, ``3.4 KiB``, ``1.2 GiB``: binary units, as file managers show sizes."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def attachment_json(index: int, ref: Any) -> dict[str, Any]:
    """One file of an update for a script: what its sender signed, numbered from 1 — never its key."""
    return {
        "index": index, "name": ref.name, "media_type": ref.media_type, "size": ref.size,
        "sha256": ref.sha256.hex(), "address": ref.address.hex(),
    }  # fmt: skip


def event_json(event: CaseEvent) -> dict[str, Any]:
    """An event for scripts; a marking violation's content and files are withheld, as on screen."""
    violated = event.violation is not None
    return {
        "case_id": event.case_id.hex(),
        "seq": event.seq,
        "kind": event.kind,
        "epoch": event.epoch,
        "author": None
        if event.author is None
        else {
            "agency": event.author.agency_id,
            "user": event.author.user_id,
            "device": event.author.device_id.hex(),
        },
        "time": when(event.time) if event.time else None,
        "readable": event.readable,
        "verified": True,
        "content_type": event.content_type,
        "content": None if violated else event.content,
        "markings": markings(event),
        "update_id": event.update_id.hex() if event.update_id else None,
        "members": [
            {
                "agency": m.author.agency_id,
                "user": m.author.user_id,
                "device": m.author.device_id.hex(),
                "role": m.role,
                "voided": m.voided,
            }
            for m in event.members
        ],
        "shared": event.shared,
        "attachments": []
        if violated
        else [attachment_json(n, a) for n, a in enumerate(event.attachments, start=1)],
        "violation": None
        if event.violation is None
        else {"rule": event.violation.rule, "message": event.violation.message},
        "voided_by": None
        if event.voided_by is None
        else {
            "agency": event.voided_by.agency_id,
            "user": event.voided_by.user_id,
            "device": event.voided_by.device_id.hex(),
        },
    }


def entry(out: Out, event: CaseEvent, *, case: bool = False) -> None:
    """One entry as a block: a head line of ids and markings, then its text, indented.

    A block rather than a table row: a row of eight columns leaves the text a
    sliver of an 80-column screen, where even a word would be cut.  rich wraps
    the head line between its fields (each id stays whole) and the text
    between words, to the terminal's width.
    """
    fields = (
        f"case {event.case_id.hex()[:8]}" if case else "",
        f"[bold]{short_id(event.update_id)}[/]" if event.update_id else "",
        f"#{event.seq}",
        f"[dim]{when(event.time)}[/]",
        f"[bold]{safe(event.author.name)}[/]" if event.author else "",
        safe(event.content_type or event.kind),
        marking_text(event),
    )
    out.head(fields)
    if event.violation is not None:
        # Signed by its author, so shown as theirs, but never as content anyone may act on.
        who = safe(event.author.name) if event.author else "its author"
        out.indented(
            f"[bold red]⚠ marking violation ({safe(event.violation.rule)}) by {who}:[/]"
            f" {safe(event.violation.message)}; its content is not shown"
        )
        return
    out.indented(what(event))


def witness_line(status: WitnessStatus) -> str:
    if not status.witnessed:
        return f"[yellow]{UNWITNESSED_LINE}[/]"
    if status.pending:
        return f"[yellow]{status.pending} pending witness[/]; {status.final} of {entries(status.count)} final"
    return f"[green]final[/]: {'the' if status.count == 1 else 'all'} {entries(status.count)} witnessed" + (
        f", last at {when(status.witnessed_at)}" if status.witnessed_at else ""
    )


def witness_json(status: WitnessStatus) -> dict[str, Any]:
    return {
        "witnessed": status.witnessed,
        "final": status.final,
        "pending": status.pending,
        "witnessed_at": when(status.witnessed_at) if status.witnessed_at else None,
    }
