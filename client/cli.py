"""``caseline``: the command line for officers, agency administrators and scripts.

Read commands print rich tables for people and, with ``--json``, one JSON
document for scripts.  Expected failures print one line — the reason and a
hint — and exit with the code of the error's family (``caseline.schemas.errors``);
no Python traceback reaches a person, not even for a bug.

Exit codes (stable, for scripts):
  0    done
  1    unexpected failure (a bug: please report it)
  2    your mistake: the command line, the content, an unknown case or member, or an
       act the case's rules or your certificate do not allow; nothing was sent
  3    untrusted: something received failed verification — do not rely on it
  4    refused by the broker (not a member, conflict, revoked…); nothing was changed
  5    temporary: no answer or a temporary refusal; run the same command again
  6    profile: this device's local state is missing, locked, unsafe or busy
  130  interrupted (Ctrl-C); an update already sealed is sent by the next run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from caseline.client.client import Client, broker_url, parse_member, verify_bundle
from caseline.client.core import CaseEvent
from caseline.client.profile import home_dir, profile_dir
from caseline.client.store import LocalStore
from caseline.client.transport import BrokerConnection
from caseline.client.watch import WitnessStatus
from caseline.crypto import note
from caseline.crypto.certs import open_enrolment_request
from caseline.crypto.keys import fingerprint, witness_fingerprint
from caseline.schemas import content as content_schemas
from caseline.schemas.errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BrokerRefusal,
    CaselineError,
    MalformedError,
    UsageError,
)
from caseline.schemas.wire import DeviceCert, RevocationList, Witness, WitnessList, decode_signed

if TYPE_CHECKING:
    from caseline.client.admin import AgencyAdmin, Published
    from rich.console import Console
    from rich.table import Table

# --------------------------------------------------------------------------- output


class Out:
    """Where a command prints.  rich is imported only when something is printed for a person.

    Importing rich costs tens of milliseconds of a command's start, and a
    script's ``--json`` post prints none of it (issue 11), so the consoles,
    and the tables and panels in the commands, are made on first use.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._console: Console | None = None
        self._errors: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - see the class docstring

            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    @property
    def errors(self) -> Console:
        if self._errors is None:
            from rich.console import Console  # noqa: PLC0415 - see the class docstring

            self._errors = Console(stderr=True, highlight=False)
        return self._errors

    def data(self, obj: Any) -> None:
        print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))

    def say(self, text: str) -> None:
        if not self.as_json:
            self.console.print(text)


def when(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def other_object(data: bytes) -> str | None:
    """Name the caseline object ``data`` is, if it is one of those often mistaken for a bundle.

    A file of the wrong kind is the caller's mistake (exit 2); only what is
    meant to be a bundle and fails to verify is untrusted data (exit 3).
    """
    for name, decode in (
        ("a device certificate", lambda: DeviceCert.decode(decode_signed(data)[0])),
        ("a revocation list", lambda: RevocationList.decode(decode_signed(data)[0])),
        ("an enrolment request", lambda: open_enrolment_request(data)),
    ):
        try:
            decode()
        except CaselineError:
            continue
        return name
    return None


def hex_arg(text: str, name: str, size: int) -> bytes:
    """An id or key typed in full: a prefix is refused, since it could name the wrong device."""
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        value = b""
    if len(value) != size:
        raise UsageError(f"{name} takes {size * 2} hex digits, in full (`caseline agency list` shows them)")
    return value


def parse_instant(text: str) -> int:
    """An ISO 8601 instant with its zone stated, as protocol milliseconds."""
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-20T06:00Z)") from None
    if instant.tzinfo is None:
        raise UsageError(f"{text!r} needs a time zone (Z for UTC): a revocation time must not be guessed")
    return int(instant.timestamp() * 1000)


def summary(event: CaseEvent) -> str:
    if event.kind == "commit":
        return "members: " + ", ".join(f"{m.author.name} ({m.role})" for m in event.members)
    if event.kind == "purged":
        return "(removed by the case's retention policy)"
    if event.kind == "voided":
        return "(withheld: sent after its device was revoked by its agency)"
    if not event.readable or event.content is None:
        return "(sealed: this device holds no key for it)"
    c = event.content
    for key in ("text", "reason", "subject", "status"):
        value = c.get(key)
        if isinstance(value, str):
            return value if len(value) <= 120 else value[:117] + "…"
    if event.content_type == "seizure":
        goods = "; ".join(g.get("description", "?") for g in c.get("goods", []))
        return f"{goods} at {c.get('place', {}).get('name', '?')}"
    if event.content_type == "ack":
        return f"{c.get('level')} {str(c.get('of', ''))[:12]}"
    return json.dumps(c, ensure_ascii=False)[:120]


def event_json(event: CaseEvent) -> dict[str, Any]:
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
        "content": event.content,
        "update_id": event.update_id.hex() if event.update_id else None,
        "members": [
            {
                "agency": m.author.agency_id,
                "user": m.author.user_id,
                "device": m.author.device_id.hex(),
                "role": m.role,
            }
            for m in event.members
        ],
        "shared": event.shared,
    }


def events_table(events: Sequence[CaseEvent], title: str) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    table = Table(title=title, title_justify="left")
    for col in ("#", "time (UTC)", "from", "type", "what"):
        table.add_column(col, overflow="fold")
    for e in events:
        kind = e.content_type or e.kind
        table.add_row(str(e.seq), when(e.time), e.author.name if e.author else "-", kind, summary(e))
    return table


# --------------------------------------------------------------------------- passphrases


def passphrase(args: argparse.Namespace, *, new: bool = False, what: str = "device") -> str | None:
    if args.passphrase_file:
        return Path(args.passphrase_file).read_text(encoding="utf-8").rstrip("\n")
    if os.environ.get("CASELINE_PASSPHRASE"):
        return os.environ["CASELINE_PASSPHRASE"]
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(f"Passphrase for this {what}: ")
    if new and getpass.getpass("Again: ") != first:
        raise UsageError("the passphrases differ")
    return first


def profile(args: argparse.Namespace) -> Path:
    return profile_dir(args.profile, home=Path(args.home) if args.home else home_dir())


def ask_secret(args: argparse.Namespace) -> str | None:
    """Ask for the passphrase the command needs, before the event loop starts.

    A prompt inside the loop blocks it, and Ctrl-C there does nothing until
    Enter: asyncio only notes the signal for a loop that is not running code.
    """
    if args.cmd == "init":
        return None if args.key_file else passphrase(args, new=True)
    if args.cmd == "evidence" and args.evidence_cmd == "verify":
        return None
    if args.cmd == "agency":
        if args.agency_cmd == "publish" and args.from_folder:
            return None
        return passphrase(args, new=args.agency_cmd == "init", what="agency root")
    return passphrase(args) if LocalStore.locked(profile(args)) else None


async def open_client(args: argparse.Namespace) -> Client:
    return await Client.open(profile(args), passphrase=args.secret, timeout=args.timeout)


async def open_admin(args: argparse.Namespace) -> AgencyAdmin:
    from caseline.client.admin import AgencyAdmin  # noqa: PLC0415 - administrators only

    return await AgencyAdmin.open(profile(args), passphrase=args.secret)


# --------------------------------------------------------------------------- officer commands


async def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from rich.panel import Panel  # noqa: PLC0415 - rich only when printing for a person

    directory = profile(args)
    key_file = Path(args.key_file) if args.key_file else None
    secret = args.secret
    if key_file is None and not secret:
        raise UsageError("give a passphrase (prompt, --passphrase-file or CASELINE_PASSPHRASE) or --key-file")
    client = await Client.create(
        directory,
        agency_id=args.agency,
        user_id=args.user,
        server_url=args.server,
        passphrase=secret,
        key_file=key_file,
        kdf=args.kdf,
    )
    async with client:
        request = await client.enrolment_request()
        target = Path(args.request_out) if args.request_out else directory / "enrolment-request.bin"
        target.write_bytes(request)
        ident = await client.identity()
    if out.as_json:
        out.data({"profile": str(directory), "device": ident.device_id.hex(), "request": str(target)})
    else:
        out.console.print(
            Panel(
                f"device [bold]{ident.device_id.hex()}[/] for {args.agency}:{args.user}\n"
                f"enrolment request: {target}\n"
                "Next: give the request to your agency administrator (`caseline agency issue`),\n"
                "pin your agency (`caseline trust add`), then `caseline login --cert FILE`.",
                title="new device",
            )
        )
    return EXIT_OK


async def cmd_login(args: argparse.Namespace, out: Out) -> int:
    cert = Path(args.cert).read_bytes() if args.cert else None
    server_key = hex_arg(args.server_key, "--server-key", 32) if args.server_key else None
    async with await open_client(args) as client:
        ident = await client.login(cert=cert, server_url=args.server, server_key=server_key)
    key_fpr = _server_fpr(ident.server_key)
    if out.as_json:
        out.data({"device": ident.device_id.hex(), "server": ident.server_url, "server_key": key_fpr})
    else:
        out.say(f"logged in as {ident.agency_id}:{ident.user_id} ({ident.role}) at {ident.server_url}")
        out.say(f"broker key code: {key_fpr} — compare it with your broker's operator")
    return EXIT_OK


def _server_fpr(key: bytes | None) -> str:
    return "-" if key is None else fingerprint("broker", key)


async def cmd_whoami(args: argparse.Namespace, out: Out) -> int:
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    async with await open_client(args) as client:
        ident = await client.identity()
    data = {
        "agency": ident.agency_id,
        "user": ident.user_id,
        "device": ident.device_id.hex(),
        "role": ident.role or "(not enrolled)",
        "scopes": list(ident.scopes),
        "valid_until": when(ident.not_after) if ident.not_after else None,
        "server": ident.server_url,
        "server_key": _server_fpr(ident.server_key),
    }
    if out.as_json:
        out.data(data)
    else:
        table = Table(show_header=False)
        for k, v in data.items():
            table.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
        out.console.print(table)
    return EXIT_OK


async def cmd_trust(args: argparse.Namespace, out: Out) -> int:
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    async with await open_client(args) as client:
        if args.trust_cmd == "add":
            root = hex_arg(args.root_key, "--root-key", 32) if args.root_key else None
            fpr = await client.trust_add(args.agency, args.fingerprint, root_key=root)
            if out.as_json:
                out.data({"agency": args.agency, "fingerprint": fpr})
            out.say(f"pinned {args.agency}: {fpr}")
        elif args.trust_cmd == "remove":
            if not await client.trust_remove(args.agency):
                raise UsageError(f"{args.agency} was not pinned")
            if out.as_json:
                out.data({"removed": args.agency})
            out.say(f"unpinned {args.agency}")
        else:
            pins = client.trusted()
            if out.as_json:
                out.data([{"agency": a, "fingerprint": f} for a, f in pins.items()])
            else:
                table = Table(title="pinned agency roots", title_justify="left")
                table.add_column("agency")
                table.add_column("fingerprint")
                for a, f in pins.items():
                    table.add_row(a, f)
                out.console.print(table)
    return EXIT_OK


async def cmd_case(args: argparse.Namespace, out: Out) -> int:
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    async with await open_client(args) as client:
        sub = args.case_cmd
        if sub == "create":
            members = [parse_member(m) for m in args.member]
            case_id = await client.create_case(
                title=args.title,
                reference=args.reference,
                members=members,
                handling=args.handling,
                tlp=args.tlp,
                retention_days=args.retention_days,
                history=args.history,
                witnessed=args.witnessed,
                alarm_after_ms=int(args.alarm_after * 1000),
            )
            status = await client.witness_status(case_id)
            if out.as_json:
                out.data({"case_id": case_id.hex(), "witnessed": status.witnessed})
            out.say(f"opened case [bold]{case_id.hex()}[/] “{args.title}”")
            out.say(witness_line(status) if not status.witnessed else "witnessed by every agency in it")
        elif sub == "list":
            cases = await client.cases()
            if out.as_json:
                out.data(
                    [
                        {
                            "case_id": c.case_id.hex(),
                            "title": c.title,
                            "reference": c.reference,
                            "role": c.role,
                            "epoch": c.epoch,
                            "entries": c.count,
                            "unread": c.unread,
                            "handling": c.handling,
                            "tlp": c.tlp,
                        }
                        for c in cases
                    ]
                )
            else:
                table = Table(title="my cases", title_justify="left")
                for col in ("case", "title", "ref", "role", "marking", "entries", "unread"):
                    table.add_column(col)
                for c in cases:
                    table.add_row(
                        c.case_id.hex()[:12],
                        c.title,
                        c.reference,
                        c.role,
                        f"{c.handling} TLP:{c.tlp}",
                        str(c.count),
                        f"[bold]{c.unread}[/]" if c.unread else "0",
                    )
                out.console.print(table)
        elif sub == "show":
            case_id = await client.resolve_case(args.case)
            await client.sync(case_id)
            events = await client.history(case_id)
            view = await client.view(case_id)
            info = view.case_info()
            status = await client.witness_status(case_id)
            await client.mark_read(case_id)
            if out.as_json:
                out.data(
                    {
                        "case_id": case_id.hex(),
                        "title": info.title if info else None,
                        "reference": info.reference if info else None,
                        "events": [event_json(e) for e in events[-args.limit :]],
                        "witness": witness_json(status),
                    }
                )
            else:
                title = f"{info.title} ({info.reference})" if info else case_id.hex()
                out.console.print(events_table(events[-args.limit :], f"case {case_id.hex()[:12]} — {title}"))
                out.say(witness_line(status))
        elif sub in ("add", "remove", "role"):
            case_id = await client.resolve_case(args.case)
            if sub == "add":
                users = [parse_member(m, args.role) for m in args.member]
                devices = await client.add_members(case_id, users, share_history=args.share_history)
                verb = f"added {len(devices)} device(s)"
            elif sub == "remove":
                if bool(args.member) == bool(args.device):
                    raise UsageError("name members (AGENCY:USER) or --device IDs, not both")
                if args.device:
                    devices = await client.remove_devices(
                        case_id, [hex_arg(d, "--device", 16) for d in args.device]
                    )
                else:
                    users2 = [(a, u) for a, u, _ in (parse_member(m) for m in args.member)]
                    devices = await client.remove_members(case_id, users2)
                verb = f"removed {len(devices)} device(s)"
            else:
                agency, user, _ = parse_member(args.member)
                await client.set_role(case_id, agency, user, args.new_role)
                devices, verb = [], f"{agency}:{user} is now {args.new_role}"
            if out.as_json:
                out.data({"case_id": case_id.hex(), "devices": [d.hex() for d in devices]})
            out.say(verb)
    return EXIT_OK


UNWITNESSED_LINE: Final = "UNWITNESSED: only the broker vouches for this history's order and time"


def witness_line(status: WitnessStatus) -> str:
    if not status.witnessed:
        return f"[yellow]{UNWITNESSED_LINE}[/]"
    if status.pending:
        return f"[yellow]{status.pending} pending witness[/]; {status.final} of {status.count} entries final"
    return f"[green]final[/]: all {status.count} entries witnessed" + (
        f", last at {when(status.witnessed_at)}" if status.witnessed_at else ""
    )


def witness_json(status: WitnessStatus) -> dict[str, Any]:
    return {
        "witnessed": status.witnessed,
        "final": status.final,
        "pending": status.pending,
        "witnessed_at": when(status.witnessed_at) if status.witnessed_at else None,
    }


def parse_fields(items: Sequence[str]) -> dict[str, Any]:
    """``--field a.b=text`` sets a string; ``--field a.b:=JSON`` a number, list or object (as HTTPie does)."""
    doc: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise UsageError(f"--field {item!r}: expected NAME=TEXT or NAME:=JSON")
        value: Any = raw
        if path.endswith(":"):
            path = path[:-1]
            try:
                value = content_schemas.decode_json(b'{"v": ' + raw.encode() + b"}")["v"]
            except CaselineError:
                raise UsageError(f"--field {item!r}: the value after := is not valid JSON") from None
        node = doc
        *parents, leaf = path.split(".")
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UsageError(f"--field {item!r}: {name} is not an object")
        node[leaf] = value
    return doc


async def cmd_post(args: argparse.Namespace, out: Out) -> int:
    if args.field and args.file:
        raise UsageError("give --field or --file, not both")
    if args.file or not args.field:
        raw = sys.stdin.buffer.read() if args.file in (None, "-") else Path(args.file).read_bytes()
        try:
            fields = content_schemas.decode_json(raw)
        except CaselineError as exc:
            raise UsageError(f"the update is not valid JSON: {exc}") from None
    else:
        fields = parse_fields(args.field)
    async with await open_client(args) as client:
        case_id = await client.resolve_case(args.case)
        posted = await client.post_typed(case_id, args.type, fields, idempotency_key=args.idempotency_key)
        status = await client.witness_status(case_id)
    final = not status.witnessed or status.final > posted.seq
    if out.as_json:
        out.data(
            {
                "case_id": case_id.hex(),
                "update_id": posted.update_id.hex(),
                "seq": posted.seq,
                "receipt_time": when(posted.receipt_time),
                "retries": posted.retries,
                "witnessed": status.witnessed,
                "final": final,
            }
        )
    else:
        state = "unwitnessed" if not status.witnessed else "final" if final else "pending witness"
        out.say(
            f"posted {args.type} #{posted.seq} id {posted.update_id.hex()[:16]} (receipt verified; {state})"
        )
    return EXIT_OK


async def cmd_follow(args: argparse.Namespace, out: Out) -> int:
    async with await open_client(args) as client:
        cases = [await client.resolve_case(c) for c in args.case] or None
        seen = 0

        async def run() -> None:
            nonlocal seen
            async for event in client.follow(cases):
                if out.as_json:
                    print(json.dumps(event_json(event), ensure_ascii=False), flush=True)
                else:
                    out.console.print(
                        f"[dim]{when(event.time)}[/] {event.case_id.hex()[:8]} #{event.seq} "
                        f"[bold]{event.author.name if event.author else '-'}[/] "
                        f"{event.content_type or event.kind}: {summary(event)}"
                    )
                seen += 1
                if args.count and seen >= args.count:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run(), timeout=args.for_seconds)
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace, out: Out) -> int:
    from rich.panel import Panel  # noqa: PLC0415 - rich only when printing for a person

    async with await open_client(args) as client:
        case_id = await client.resolve_case(args.case)
        report = await client.verify_case(case_id)
        status = await client.witness_status(case_id)
    data = {
        "case_id": case_id.hex(),
        "verified": True,
        "entries": report.count,
        "epoch": report.epoch,
        "head": report.head.hex(),
        "head_code": report.code,
        "updates": report.updates,
        "readable": report.readable,
        "voided": report.voided,
        "witness": witness_json(status),
        "members": [
            {"member": m.author.name, "device": m.author.device_id.hex(), "role": m.role}
            for m in report.members
        ],
    }
    if out.as_json:
        out.data(data)
    else:
        out.console.print(
            Panel(
                f"{report.count} entries verified from genesis, epoch {report.epoch}, "
                f"{report.readable}/{report.updates} updates readable here"
                + (f", {report.voided} withheld (sent by revoked devices)" if report.voided else "")
                + "\n"
                f"members: {', '.join(f'{m.author.name} ({m.role})' for m in report.members)}\n"
                f"head code: [bold]{report.code}[/] — the same code on your partner's screen "
                "means you both hold the same history\n" + witness_line(status),
                title=f"case {case_id.hex()[:12]} verified",
            )
        )
    return EXIT_OK


async def cmd_log(args: argparse.Namespace, out: Out) -> int:
    """``caseline log submit``: take the broker's newest checkpoint to our own witnesses."""
    async with await open_client(args) as client:
        outcomes = await client.submit_to_witnesses()
    if out.as_json:
        out.data([{"witness": name, "outcome": what} for name, what in outcomes])
    elif not outcomes:
        out.say("your agency lists no witnesses")
    for name, what in outcomes:
        out.say(f"{name}: {what}")
    return EXIT_OK


async def cmd_evidence(args: argparse.Namespace, out: Out) -> int:
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    if args.evidence_cmd == "export":
        async with await open_client(args) as client:
            case_id = await client.resolve_case(args.case)
            bundle = await client.export_evidence(case_id, args.seq or None)
        Path(args.output).write_bytes(bundle)
        if out.as_json:
            out.data({"case_id": case_id.hex(), "bundle": args.output, "bytes": len(bundle)})
        out.say(f"wrote evidence bundle {args.output} ({len(bundle)} bytes)")
        return EXIT_OK
    pins = {}
    for item in args.pin:
        agency, sep, fpr = item.partition("=")
        if not sep:
            raise UsageError("--pin AGENCY=FINGERPRINT")
        pins[agency] = fpr
    try:
        data = Path(args.bundle).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.bundle}: {exc.strerror}") from None
    not_a_bundle = other_object(data)
    if not_a_bundle:
        raise UsageError(f"{args.bundle} is {not_a_bundle}, not an evidence bundle")
    report = verify_bundle(data, pins)
    records: list[dict[str, str | int]] = [
        {
            "seq": r.seq,
            "author": f"{r.author.agency_id}:{r.author.user_id}",
            "device": r.author.device_id.hex(),
            "time": when(r.update.record.time),
            "content_type": r.update.record.content_type,
            "update_id": r.update.update_id.hex(),
        }
        for r in report.records
    ]
    checkpoint = (
        None
        if report.checkpoint is None
        else {
            "origin": report.checkpoint.origin,
            "size": report.checkpoint.size,
            "root": report.checkpoint.root.hex(),
        }
    )
    witnesses = [{"name": v.name, "agency": v.agency_id, "time": when(v.time)} for v in report.witnesses]
    if out.as_json:
        out.data(
            {
                "verified": True,
                "case_id": report.case_id.hex(),
                "exporter": f"{report.exporter.agency_id}:{report.exporter.user_id}",
                "exported_at": when(report.exported_at),
                "log_length": report.log_length,
                "records": records,
                "witnessed": report.witnessed,
                "checkpoint": checkpoint,
                "witnesses": witnesses,
                "witnessed_at": None if report.witnessed_at is None else when(report.witnessed_at),
            }
        )
    else:
        table = Table(title=f"evidence for case {report.case_id.hex()[:12]}: VERIFIED", title_justify="left")
        for col in ("#", "time (UTC)", "author", "type", "update id"):
            table.add_column(col)
        for r in records:
            table.add_row(
                *(str(r[k]) for k in ("seq", "time", "author", "content_type")), str(r["update_id"])[:16]
            )
        out.console.print(table)
        out.say(
            f"exported by {report.exporter.agency_id}:{report.exporter.user_id} "
            f"at {when(report.exported_at)}; log of {report.log_length} entries signed by the broker"
        )
        from rich.markup import escape  # noqa: PLC0415 - rich only when printing for a person

        if checkpoint is not None:
            origin, size, root = (checkpoint[k] for k in ("origin", "size", "root"))
            out.say(f"checkpoint: {escape(str(origin))}  size {size}  root {root}")
        if report.witnessed and report.witnessed_at is not None:
            out.say(f"WITNESSED at {when(report.witnessed_at)} by:")
            for w in witnesses:
                out.say(f"  {escape(w['name'])} ({w['agency']}) at {w['time']}")
        else:
            out.say(UNWITNESSED_LINE)
    return EXIT_OK


# --------------------------------------------------------------------------- agency administration


async def cmd_agency(args: argparse.Namespace, out: Out) -> int:
    from caseline.client.admin import AgencyAdmin  # noqa: PLC0415 - administrators only
    from rich.panel import Panel  # noqa: PLC0415 - rich only when printing for a person
    from rich.table import Table  # noqa: PLC0415 - rich only when printing for a person

    sub = args.agency_cmd
    if sub == "init":
        secret = args.secret
        if not secret:
            raise UsageError("an agency root needs a passphrase")
        admin = await AgencyAdmin.create(profile(args), args.agency, passphrase=secret, kdf=args.kdf)
    elif sub == "publish" and args.from_folder:
        return await publish_from_folder(args, out)
    else:
        admin = await open_admin(args)
    try:
        if sub in ("init", "show"):
            data = {
                "agency": admin.agency_id,
                "root_key": admin.root.public_key.hex(),
                "fingerprint": admin.fingerprint,
            }
            if out.as_json:
                out.data(data)
            else:
                out.console.print(
                    Panel(
                        f"root key {data['root_key']}\nfingerprint [bold]{admin.fingerprint}[/]\n"
                        "Read the fingerprint aloud to each partner agency and to the broker's operator.",
                        title=f"agency {admin.agency_id}",
                    )
                )
        elif sub == "issue":
            request = Path(args.request).read_bytes()
            cert = await admin.issue(request, role=args.role, scopes=args.scope, days=args.days)
            Path(args.output).write_bytes(cert)
            if out.as_json:
                out.data({"certificate": args.output})
            out.say(f"issued a certificate ({args.role}): {args.output}")
        elif sub == "revoke":
            since = parse_instant(args.since) if args.since else None
            crl = await admin.revoke(hex_arg(args.device, "DEVICE", 16), reason=args.reason, since=since)
            if out.as_json:
                out.data({"revoked": args.device, "since": args.since, "list_bytes": len(crl)})
            out.say(f"revoked {args.device}; run `caseline agency publish` to cut it off")
        elif sub == "list":
            revoked = {d: (t, r) for d, _, t, r in await admin.store.revoked()}
            rows = [
                {
                    "serial": i.serial,
                    "user": i.user_id,
                    "role": i.role,
                    "device": i.device_id.hex(),
                    "issued": when(i.issued_at),
                    "published": i.published,
                    "revoked": when(revoked[i.device_id][0]) if i.device_id in revoked else None,
                    "reason": revoked[i.device_id][1] if i.device_id in revoked else None,
                }
                for i in await admin.issued()
            ]
            if out.as_json:
                out.data(rows)
            else:
                table = Table(title=f"certificates issued by {admin.agency_id}", title_justify="left")
                for column in ("serial", "user", "role", "device", "issued", "published", "revoked"):
                    table.add_column(column)
                for row in rows:
                    revoked_text = f"{row['revoked']} ({row['reason']})" if row["revoked"] else "-"
                    published = "yes" if row["published"] else "no"
                    table.add_row(
                        str(row["serial"]), str(row["user"]), str(row["role"]), str(row["device"]),
                        str(row["issued"]), published, revoked_text,
                    )  # fmt: skip
                out.console.print(table)
        elif sub == "export":
            result = await admin.export(Path(args.folder))
            if out.as_json:
                out.data({"certificates": result.certificates, "revocation_list": result.revocation_number})
            out.say(
                f"wrote {result.certificates} certificate(s) and revocation list #{result.revocation_number}"
                f" to {args.folder}; on a networked machine run"
                f" `caseline agency publish --from {args.folder} --server URL`"
            )
        elif sub == "witnesses":
            if args.witness:
                await admin.set_witnesses([parse_witness(w) for w in args.witness])
            signed = await admin.witness_list()
            listed = [] if signed is None else list(WitnessList.decode(decode_signed(signed)[0]).witnesses)
            rows = [
                {
                    "name": w.name,
                    "key": w.public_key.hex(),
                    "url": w.url,
                    "fingerprint": witness_fingerprint(w.name, w.public_key),
                }
                for w in listed
            ]
            if out.as_json:
                out.data(rows)
            elif not rows:
                out.say("no witnesses listed: cases with this agency's members stay unwitnessed")
            else:
                for row in rows:
                    out.say(f"{row['name']}  {row['url']}\n  fingerprint [bold]{row['fingerprint']}[/]")
                if args.witness:
                    out.say(
                        "signed a new witness list; run `caseline agency publish` to send it to the broker"
                    )
        elif sub == "publish":
            broker = BrokerConnection(
                broker_url(args.server), keys=None, server_key=None, timeout=args.timeout
            )
            try:
                result = await admin.publish(broker)
            finally:
                await broker.close()
            report_published(result, out)
    finally:
        await admin.close()
    return EXIT_OK


def parse_witness(text: str) -> Witness:
    """``VKEY@URL``: the vkey ``caseline-witness vkey`` prints, and where the witness listens."""
    vkey, sep, url = text.partition("@")
    if not sep:
        raise UsageError(f"--witness {text!r}: expected VKEY@URL (VKEY as `caseline-witness vkey` prints it)")
    try:
        name, alg, key = note.parse_vkey(vkey)
        if alg != note.ALG_COSIGNATURE_V1:
            raise MalformedError("not a cosignature/v1 key (algorithm 0x04)")
        return Witness(name=name, public_key=key, url=url)
    except MalformedError as exc:
        raise UsageError(f"--witness {text!r}: {exc}") from None


async def publish_from_folder(args: argparse.Namespace, out: Out) -> int:
    """The networked half of an offline root: no profile, no passphrase, nothing secret."""
    from caseline.client.admin import publish_folder  # noqa: PLC0415 - administrators only

    broker = BrokerConnection(broker_url(args.server), keys=None, server_key=None, timeout=args.timeout)
    try:
        report_published(await publish_folder(broker, Path(args.from_folder)), out)
    finally:
        await broker.close()
    return EXIT_OK


def report_published(result: Published, out: Out) -> None:
    if out.as_json:
        out.data({"certificates": result.certificates, "revocation_list": result.revocation_number})
    out.say(f"published {result.certificates} certificate(s), revocation list #{result.revocation_number}")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="caseline", description="End-to-end-encrypted case threads between agencies."
    )
    p.add_argument("--profile", help="profile name (default: $CASELINE_PROFILE or 'default')")
    p.add_argument("--home", help="data directory (default: $CASELINE_HOME or the XDG data directory)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--passphrase-file", help="read the passphrase from this file")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker")
    cmds = p.add_subparsers(dest="cmd", required=True)

    c = cmds.add_parser("init", help="create this device's keys and an enrolment request")
    c.add_argument("--agency", required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--server", required=True, help="broker URL, e.g. https://broker.example:8443")
    c.add_argument("--key-file", help="bots: keep keys in this owner-only file instead of a passphrase")
    c.add_argument("--kdf", choices=("moderate", "interactive"), default="moderate")
    c.add_argument("--request-out", help="where to write the enrolment request")

    c = cmds.add_parser("login", help="install the certificate, pin the broker and log in")
    c.add_argument("--cert", help="the certificate file from your administrator")
    c.add_argument("--server", help="change the broker URL")
    c.add_argument("--server-key", help="the broker key (hex) your operator gave you")

    cmds.add_parser("whoami", help="this device's identity")

    t = cmds.add_parser("trust", help="pin partner agencies' roots").add_subparsers(
        dest="trust_cmd", required=True
    )
    c = t.add_parser("add", help="pin an agency after checking its fingerprint out of band")
    c.add_argument("agency")
    c.add_argument("fingerprint", help="30 digits, as read to you")
    c.add_argument("--root-key", help="the root key (hex) if not taken from the broker's registry")
    t.add_parser("list")
    c = t.add_parser("remove")
    c.add_argument("agency")

    k = cmds.add_parser("case", help="open, list, show and change cases").add_subparsers(
        dest="case_cmd", required=True
    )
    c = k.add_parser("create")
    c.add_argument("--title", required=True)
    c.add_argument("--reference", default="")
    c.add_argument("--member", action="append", default=[], metavar="AGENCY:USER[:ROLE]")
    c.add_argument("--handling", choices=("H0", "H1", "H2", "H3"), default="H2")
    c.add_argument("--tlp", choices=("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"), default="AMBER")
    c.add_argument(
        "--retention-days",
        type=int,
        default=365,
        help="days the broker keeps update bodies (0: relay only, bodies go at its next retention pass)",
    )
    c.add_argument("--history", choices=("shared", "none"), default="shared")
    w = c.add_mutually_exclusive_group()
    w.add_argument(
        "--witnessed",
        dest="witnessed",
        action="store_const",
        const=True,
        default=None,
        help="require a witness of every agency in the case (default: when every agency lists one)",
    )
    w.add_argument(
        "--unwitnessed",
        dest="witnessed",
        action="store_const",
        const=False,
        help="a trial or single-agency case: only the broker vouches for its order and time",
    )
    c.add_argument(
        "--alarm-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="raise the split-view alarm when entries wait longer than this for the witnesses (1..3600)",
    )
    k.add_parser("list")
    c = k.add_parser("show")
    c.add_argument("case")
    c.add_argument("--limit", type=int, default=50)
    c = k.add_parser("add")
    c.add_argument("case")
    c.add_argument("member", nargs="+", metavar="AGENCY:USER")
    c.add_argument("--role", choices=("owner", "member", "observer"), default="member")
    c.add_argument("--share-history", action="store_true", help="give them the keys of the updates so far")
    c = k.add_parser("remove")
    c.add_argument("case")
    c.add_argument("member", nargs="*", metavar="AGENCY:USER")
    c.add_argument("--device", action="append", default=[], help="remove one device (hex id) only")
    c = k.add_parser("role")
    c.add_argument("case")
    c.add_argument("member", metavar="AGENCY:USER")
    c.add_argument("new_role", choices=("owner", "member", "observer"))

    c = cmds.add_parser("post", help="post an update (fields, a JSON file, or JSON on stdin)")
    c.add_argument("case")
    c.add_argument("--type", required=True, choices=sorted(content_schemas.CONTENT_TYPES))
    c.add_argument("--field", action="append", default=[], metavar="NAME=TEXT|NAME:=JSON")
    c.add_argument("--file", help="a JSON document ('-' for stdin)")
    c.add_argument("--idempotency-key", help="scripts: a second post with the same key does nothing")

    c = cmds.add_parser("follow", help="print verified updates as they arrive")
    c.add_argument("case", nargs="*")
    c.add_argument("--count", type=int, default=0, help="stop after this many events")
    c.add_argument("--for", dest="for_seconds", type=float, default=None, help="stop after this many seconds")

    c = cmds.add_parser("verify", help="re-verify a case from genesis and print its head code")
    c.add_argument("case")

    c = cmds.add_parser("log", help="the broker log: hand its newest checkpoint to your agency's witnesses")
    c.add_argument("log_cmd", choices=["submit"])
    e = cmds.add_parser("evidence", help="export and verify evidence bundles").add_subparsers(
        dest="evidence_cmd", required=True
    )
    c = e.add_parser("export")
    c.add_argument("case")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--seq", type=int, action="append", help="disclose only these log positions")
    c = e.add_parser("verify", help="offline: needs only the pinned fingerprints")
    c.add_argument("bundle")
    c.add_argument("--pin", action="append", default=[], metavar="AGENCY=FINGERPRINT", required=True)

    a = cmds.add_parser("agency", help="agency administration").add_subparsers(
        dest="agency_cmd", required=True
    )
    c = a.add_parser("init", help="create the agency root key")
    c.add_argument("agency")
    c.add_argument("--kdf", choices=("moderate", "interactive"), default="moderate")
    a.add_parser("show", help="the root key and its fingerprint")
    c = a.add_parser("issue", help="certify a device from its enrolment request")
    c.add_argument("request")
    c.add_argument("--role", choices=("officer", "bot", "admin"), default="officer")
    c.add_argument("--scope", action="append", default=[], help="bots: a content type, or 'read'")
    c.add_argument("--days", type=int, default=365)
    c.add_argument("-o", "--output", required=True)
    c = a.add_parser("revoke", help="revoke a device (then publish)")
    c.add_argument("device", help="device id (hex)")
    c.add_argument(
        "--reason",
        default="unspecified",
        choices=("unspecified", "key-compromise", "device-lost", "superseded", "left-agency"),
    )
    c.add_argument(
        "--since",
        metavar="TIME",
        help="backdate to the last moment the key was known safe (ISO 8601, e.g. 2026-11-20T06:00Z)",
    )
    a.add_parser("list", help="the register of certificates this root issued and revoked")
    c = a.add_parser("export", help="offline root: write certificates and the revocation list to a folder")
    c.add_argument("folder", help="a new or empty folder (e.g. on removable media)")
    c = a.add_parser("witnesses", help="list, or set with --witness, the agency's witnesses (then publish)")
    c.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY@URL",
        help="a witness this agency runs: its vkey (`caseline-witness vkey`) and URL; repeat for more",
    )
    c = a.add_parser("publish", help="push certificates and the revocation list to the broker")
    c.add_argument("--server", required=True)
    c.add_argument(
        "--from",
        dest="from_folder",
        metavar="FOLDER",
        help="publish what `agency export` wrote; needs no root key or passphrase",
    )
    return p


COMMANDS: Final = {
    "init": cmd_init,
    "login": cmd_login,
    "whoami": cmd_whoami,
    "trust": cmd_trust,
    "case": cmd_case,
    "post": cmd_post,
    "follow": cmd_follow,
    "verify": cmd_verify,
    "evidence": cmd_evidence,
    "log": cmd_log,
    "agency": cmd_agency,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; Ctrl-C at any point — parsing, the command, the error report — is 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Out(args.json)
    notices = logging.StreamHandler(sys.stderr)
    notices.setFormatter(logging.Formatter("caseline: %(message)s"))
    logging.getLogger("caseline.client").addHandler(notices)
    logging.getLogger("caseline.client").setLevel(logging.INFO)
    try:
        args.secret = ask_secret(args)
        return asyncio.run(COMMANDS[args.cmd](args, out))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CaselineError as exc:
        return report(out, exc, str(exc))
    except OSError as exc:  # a file named on the command line
        reason = exc.strerror or str(exc)
        return report(out, UsageError(reason), f"{exc.filename}: {reason}" if exc.filename else reason)
    except Exception as exc:  # a bug: one line for the officer, the traceback only on request
        if os.environ.get("CASELINE_DEBUG"):
            raise
        return report(
            out, exc, f"unexpected {type(exc).__name__} (a bug; run with CASELINE_DEBUG=1 and report it)"
        )


def report(out: Out, exc: BaseException, reason: str) -> int:
    """One line for a person (the reason and what to do), or one JSON object for a script."""
    if isinstance(exc, CaselineError):
        code, hint, name = exc.exit_code, exc.hint, exc.code
    else:
        code, hint, name = EXIT_BUG, "please report this with the command you ran", "bug"
    if isinstance(exc, BrokerRefusal) and exc.status:
        reason = f"the broker refused ({exc.status} {exc.problem}): {reason}"
    if out.as_json:
        print(json.dumps({"error": name, "message": reason, "exit": code}), file=sys.stderr)
    else:
        out.errors.print(f"caseline: {reason}", markup=False)
        out.errors.print(f"hint: {hint}", markup=False, style="dim")
    return code


if __name__ == "__main__":
    sys.exit(main())
