"""The officer's commands: a device, its broker, pinned partners, cases, updates, evidence.

Each command is a thin shell: it reads its options, asks for the passphrase
before the event loop starts (``Settings.unlock``), runs one coroutine on a
``Client`` and prints through ``Out``.  Commands are registered on the groups
here; another module adds its own the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from caseline.client.cli.attachments import check_files, in_cli_words
from caseline.client.cli.files import refuse_existing, write_private
from caseline.client.cli.output import (
    UNWITNESSED_LINE,
    Out,
    entries,
    entry,
    event_json,
    markings_text,
    safe,
    tlp,
    until,
    when,
    witness_json,
    witness_line,
)
from caseline.client.cli.params import (
    CASE_ROLE,
    HANDLING,
    KDF,
    RESTRICTION,
    TLP,
    hex_arg,
    parse_attachment_keys,
    parse_fields,
    parse_pins,
    parse_until,
    server_key_arg,
)
from caseline.client.cli.settings import command, global_options, run, settings
from caseline.client.refs import resolve_update, short_id
from caseline.schemas import content as content_schemas
from caseline.schemas.errors import (
    EXIT_OK,
    BrokerUnavailable,
    CaselineError,
    IntegrityError,
    MalformedError,
    UntrustedError,
    UsageError,
)

if TYPE_CHECKING:
    from caseline.client.client import Client, Repinned
    from caseline.client.core import CaseEvent, CertChange
    from caseline.schemas.wire import DeviceCert

STDIN_NOTICE: Final = (
    "reading the update's JSON from standard input; end with Ctrl-D (Ctrl-Z Enter on Windows)"
)


def _fpr(key: bytes | None) -> str:
    from caseline.crypto.keys import fingerprint  # noqa: PLC0415 - with the command

    return "-" if key is None else fingerprint("broker", key)


def register(root: click.Group) -> None:
    """Add the officer's commands to the ``caseline`` group."""

    @command(root, "init")
    @click.option("--agency", required=True, help="Your agency's id, e.g. ke-kra.")
    @click.option("--user", required=True, help="Your user id in that agency, e.g. alice.")
    @click.option("--server", required=True, help="The broker's URL, e.g. https://broker.example:8443.")
    @click.option("--key-file", help="Bots: keep keys in this owner-only file instead of a passphrase.")
    @click.option("--kdf", type=KDF, default="moderate", show_default=True, help="Passphrase hardening.")
    @click.option("--request-out", help="Where to write the enrolment request (default: in the profile).")
    def init(
        *, agency: str, user: str, server: str, key_file: str | None, kdf: str, request_out: str | None
    ) -> int:
        """Create this device's keys and an enrolment request.

        \b
        Examples:
          caseline init --agency ke-kra --user alice --server https://broker.example:8443
          caseline --profile bot init --agency ke-kra --user bot --server URL --key-file bot.key
        """
        from caseline.client.client import Client, check_new_device  # noqa: PLC0415 - see the package docstring

        s = settings()
        out = Out(s.as_json)
        check_new_device(agency_id=agency, user_id=user, server_url=server)  # before any prompt or file
        secret = None if key_file else s.passphrase(new=True)
        if key_file is None and not secret:
            raise UsageError(
                "give a passphrase (prompt, --passphrase-file or CASELINE_PASSPHRASE) or --key-file"
            )
        directory = s.directory()

        async def act() -> tuple[Path, bytes]:
            client = await Client.create(
                directory, agency_id=agency, user_id=user, server_url=server, passphrase=secret,
                key_file=Path(key_file) if key_file else None, kdf=kdf,
            )  # fmt: skip
            async with client:
                request = await client.enrolment_request()
                target = Path(request_out) if request_out else directory / "enrolment-request.bin"
                target.write_bytes(request)
                return target, (await client.identity()).device_id

        target, device = run(act())
        if out.as_json:
            out.data({"profile": str(directory), "device": device.hex(), "request": str(target)})
        else:
            out.panel(
                f"device [bold]{device.hex()}[/] for {agency}:{user}\n"
                f"enrolment request: {target}\n"
                "Next: give the request to your agency administrator (`caseline agency issue`),\n"
                "pin your agency (`caseline trust add`), then `caseline login --cert FILE`.",
                title="new device",
            )
        return EXIT_OK

    @command(root, "login")
    @click.option("--cert", help="The certificate file from your agency administrator.")
    @click.option("--server", help="Change the broker URL.")
    @click.option(
        "--server-key",
        metavar="CODE",
        help="The broker key's 30-digit code your operator read to you (`caseline-server key`), or its hex.",
    )
    def login(cert: str | None, server: str | None, server_key: str | None) -> int:
        """Install your certificate, pin the broker's key and log in.

        \b
        Examples:
          caseline login --cert alice.cert
          caseline login --server https://broker.example:8443
          caseline login --server-key '12345 67890 12345 67890 12345 67890'
        """
        s = settings()
        out = Out(s.as_json)
        cert_bytes = certificate_file(Path(cert)) if cert else None
        key, code = server_key_arg(server_key) if server_key else (None, None)
        secret = s.unlock()

        async def act() -> Any:
            async with await s.client(secret) as client:
                return await client.login(
                    cert=cert_bytes, server_url=server, server_key=key, server_key_code=code
                )

        ident = run(act())
        key_fpr = _fpr(ident.server_key)
        if out.as_json:
            out.data({"device": ident.device_id.hex(), "server": ident.server_url, "server_key": key_fpr})
        else:
            out.say(f"logged in as {ident.agency_id}:{ident.user_id} ({ident.role}) at {ident.server_url}")
            out.say(f"broker key code: {key_fpr} — compare it with your broker's operator")
        return EXIT_OK

    @command(root, "whoami")
    def whoami() -> int:
        """Show this device's identity, certificate and broker.

        \b
        Examples:
          caseline whoami
          caseline whoami --json
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> tuple[Any, bool, list[bytes]]:
            import aiohttp  # noqa: PLC0415 - loaded with the client

            async with await s.client(secret) as client:
                # Learn this device's own revocation before saying it is not revoked.  Unforced,
                # the broker's digest usually means no request; an unreachable broker leaves
                # the lists this profile holds, and says so.
                try:
                    await client.refresh_revocations()
                    reached = True
                except (OSError, TimeoutError, aiohttp.ClientError, BrokerUnavailable):
                    reached = False
                drafts = [p.case_id for p in await client.pending_uploads()]
                return await client.identity(), reached, drafts

        ident, reached, drafts = run(act())
        data = {
            "agency": ident.agency_id,
            "user": ident.user_id,
            "device": ident.device_id.hex(),
            "role": ident.role or "(not enrolled)",
            "scopes": list(ident.scopes),
            "valid_until": when(ident.not_after) if ident.not_after else None,
            "revoked": when(ident.revoked_at) if ident.revoked_at is not None else None,
            "server": ident.server_url,
            "server_key": _fpr(ident.server_key),
        }
        if out.as_json:
            out.data({**data, "revocations_checked": reached, "unfinished_posts": [c.hex() for c in drafts]})
            return EXIT_OK
        shown = {**data, "scopes": ", ".join(ident.scopes) or "-", "valid_until": data["valid_until"] or "-"}
        shown["revoked"] = data["revoked"] or "no"
        if not reached:
            shown["revoked"] += " (as last known: the broker was not reached)"
        out.block(
            [f"[bold]{safe(ident.agency_id)}:{safe(ident.user_id)}[/]"],
            [(k, safe(str(v))) for k, v in shown.items() if k not in ("agency", "user")],
        )
        if drafts:
            out.say(_unfinished(len(drafts), ", ".join(sorted({c.hex()[:8] for c in drafts}))))
        return EXIT_OK

    _trust(root)
    _case(root)
    _posting(root)
    _evidence(root)


def _trust(root: click.Group) -> None:
    @root.group("trust")
    @global_options
    def trust() -> None:
        """Pin partner agencies' roots.

        Pin one only after its fingerprint was read to you out of band.

        \b
        Examples:
          caseline trust add tz-tra 123456789012345678901234567890
          caseline trust list
        """

    @command(trust, "add")
    @click.argument("agency")
    @click.argument("fingerprint")
    @click.option("--root-key", metavar="HEX", help="The root key, if not taken from the broker's registry.")
    def add(agency: str, fingerprint: str, root_key: str | None) -> int:
        """Pin AGENCY's root key after its FINGERPRINT (30 digits) was read to you.

        \b
        Examples:
          caseline trust add tz-tra 123456789012345678901234567890
        """
        s = settings()
        out = Out(s.as_json)
        root_bytes = hex_arg(root_key, "--root-key", 32) if root_key else None
        from caseline.crypto.keys import normalize_fingerprint  # noqa: PLC0415 - with the command

        normalize_fingerprint(fingerprint)  # a mistyped one is refused before the passphrase is asked
        secret = s.unlock()

        async def act() -> str:
            async with await s.client(secret) as client:
                return await client.trust_add(agency, fingerprint, root_key=root_bytes)

        fpr = run(act())
        if out.as_json:
            out.data({"agency": agency, "fingerprint": fpr})
        out.say(f"pinned {agency}: {fpr}")
        return EXIT_OK

    @command(trust, "remove")
    @click.argument("agency")
    def remove(agency: str) -> int:
        """Unpin AGENCY: its members' updates are no longer trusted here.

        \b
        Examples:
          caseline trust remove tz-tra
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> bool:
            async with await s.client(secret) as client:
                return await client.trust_remove(agency)

        if not run(act()):
            raise UsageError(f"{agency} was not pinned")
        if out.as_json:
            out.data({"removed": agency})
        out.say(f"unpinned {agency}")
        return EXIT_OK

    @command(trust, "list")
    def trust_list() -> int:
        """List the agency roots this device has pinned.

        \b
        Examples:
          caseline trust list
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> dict[str, str]:
            async with await s.client(secret) as client:
                return client.trusted()

        pins = run(act())
        if out.as_json:
            out.data([{"agency": a, "fingerprint": f} for a, f in pins.items()])
            return EXIT_OK
        if not pins:
            out.say("no agency roots pinned: `caseline trust add AGENCY FINGERPRINT`")
        for a, f in pins.items():
            out.say(f"[bold]{safe(a)}[/]  {f}")
        return EXIT_OK


def _case(root: click.Group) -> None:
    @root.group("case")
    @global_options
    def case() -> None:
        """Open, list, show and change cases.

        \b
        Examples:
          caseline case create --title "Op Tembo" --member tz-tra:juma
          caseline case list
          caseline case show 3f2a9c
        """

    @command(case, "create")
    @click.option("--title", required=True, help="The case's title, seen by every member.")
    @click.option("--reference", default="", help="Your agency's own reference for the case.")
    @click.option("--member", multiple=True, metavar="AGENCY:USER[:ROLE]", help="A member to add; repeat.")
    @click.option(
        "--handling", type=HANDLING, default="H2", show_default=True, help="The case's handling code."
    )
    @click.option("--tlp", "tlp_", type=TLP, default="AMBER", show_default=True, help="The case's TLP.")
    @click.option(
        "--retention-days", type=click.IntRange(0, 36500), default=365, show_default=True,
        help="Days the broker keeps update bodies (0: relay only, bodies go at its next retention pass).",
    )  # fmt: skip
    @click.option(
        "--history", type=click.Choice(["shared", "none"]), default="shared", show_default=True,
        help="Whether members added later get the keys of earlier updates.",
    )  # fmt: skip
    @click.option(
        "--witnessed/--unwitnessed", default=None,
        help="Require a witness of every agency in the case (default: when every agency lists one),"
        " or not: a trial or single-agency case that only the broker vouches for.",
    )  # fmt: skip
    @click.option(
        "--alarm-after", type=float, default=60.0, show_default=True, metavar="SECONDS",
        help="Raise the split-view alarm when entries wait longer than this for the witnesses (1..3600).",
    )  # fmt: skip
    @click.option(
        "--require-approval", is_flag=True,
        help="A member of a new agency joins only with the approval of an owner of each agency in the case.",
    )  # fmt: skip
    def create(
        *,
        title: str, reference: str, member: tuple[str, ...], handling: str, tlp_: str,
        retention_days: int, history: str, witnessed: bool | None, alarm_after: float,
        require_approval: bool,
    ) -> int:  # fmt: skip
        """Open a case with you as its owner.

        \b
        Examples:
          caseline case create --title "Op Tembo" --member tz-tra:juma --handling H3 --tlp RED
          caseline case create --title "Trial" --unwitnessed
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        s = settings()
        out = Out(s.as_json)
        members = [parse_member(m) for m in member]
        secret = s.unlock()

        async def act() -> tuple[bytes, Any]:
            async with await s.client(secret) as client:
                case_id = await client.create_case(
                    title=title, reference=reference, members=members, handling=handling, tlp=tlp_,
                    retention_days=retention_days, history=history, witnessed=witnessed,
                    alarm_after_ms=int(alarm_after * 1000), require_approval=require_approval,
                )  # fmt: skip
                return case_id, await client.witness_status(case_id)

        case_id, status = run(act())
        if out.as_json:
            out.data({"case_id": case_id.hex(), "witnessed": status.witnessed})

        out.say(f"opened case [bold]{case_id.hex()}[/] “{safe(title)}”")
        if status.witnessed:
            out.say("witnessed by every agency in it")
        elif witnessed is False:  # asked for; when it was not, the client's notice said why, once
            out.say(witness_line(status))
        return EXIT_OK

    @command(case, "list")
    def case_list() -> int:
        """List your cases with their full ids, markings and unread counts.

        \b
        Examples:
          caseline case list
          caseline case list --json
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> Any:
            async with await s.client(secret) as client:
                return await client.cases()

        cases = run(act())
        if out.as_json:
            out.data(
                [
                    {
                        "case_id": c.case_id.hex(), "title": c.title, "reference": c.reference,
                        "role": c.role, "epoch": c.epoch, "entries": c.count, "unread": c.unread,
                        "handling": c.handling, "tlp": c.tlp, "tainted": c.tainted, "error": c.error or None,
                    }
                    for c in cases
                ]
            )  # fmt: skip
            return EXIT_OK

        if not cases:
            out.say("no cases yet: `caseline case create --title …`, or ask a partner to add you")
        for c in cases:  # a block per case: the full id always fits, whatever the width
            out.say(
                f"[bold]{c.case_id.hex()}[/]  {safe(c.title)}"
                + (f"  ({safe(c.reference)})" if c.reference else "")
            )
            unread = f"[bold]{c.unread} unread[/]" if c.unread else "0 unread"
            out.say(f"    {c.role}  {c.handling} {tlp(c.tlp)}  {entries(c.count)}  {unread}")
            if c.tainted:
                out.say(
                    "    [bold red]opened by a revoked device: an owner must run"
                    f" caseline case rekey {c.case_id.hex()}[/]"
                )
            if c.error:
                out.say(f"    [bold red]not up to date:[/] {safe(c.error)}")
        return EXIT_OK

    @command(case, "show")
    @click.argument("case_ref", metavar="CASE")
    @click.option(
        "--limit", type=click.IntRange(min=1), default=50, show_default=True,
        help="Show at most this many of the latest entries.",
    )  # fmt: skip
    @click.option("--all", "show_all", is_flag=True, help="Show every entry, however many.")
    def show(case_ref: str, limit: int, show_all: bool) -> int:
        """Show a case's latest entries: short id, markings, author and text of each.

        CASE is the case id or a unique prefix of at least 6 hex digits.  The
        short id in the first column is what `post --in-reply-to` and `--of`
        take back.

        \b
        Examples:
          caseline case show 3f2a9c
          caseline case show 3f2a9c --limit 5
          caseline case show 3f2a9c --all --json | jq '.events[].update_id'
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> tuple[bytes, Any, Any, Any, int]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                await client.sync(case_id)
                events = await client.history(case_id)
                info = (await client.view(case_id)).case_info()
                status = await client.witness_status(case_id)
                await client.mark_read(case_id)
                return case_id, events, info, status, len(await client.pending_uploads(case_id))

        case_id, events, info, status, drafts = run(act())
        shown = events if show_all else events[-limit:]
        hidden = len(events) - len(shown)
        if out.as_json:
            out.data(
                {
                    "case_id": case_id.hex(),
                    "title": info.title if info else None,
                    "reference": info.reference if info else None,
                    "events": [event_json(e) for e in shown],
                    "hidden": hidden,
                    "witness": witness_json(status),
                    "unfinished_posts": drafts,
                }
            )
        else:
            title = safe(
                f"{info.title} ({info.reference})" if info and info.reference else info.title if info else ""
            )
            out.say(f"case [bold]{case_id.hex()}[/] {title}")
            if hidden:
                out.say(f"[dim]… {entries(hidden, 'earlier')} not shown (--limit N or --all)[/]")
            for event in shown:
                entry(out, event)
            out.say(witness_line(status))
            if drafts:
                out.say(_unfinished(drafts, "this case"))
        return EXIT_OK

    @command(case, "add")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("member", nargs=-1, required=True, metavar="AGENCY:USER...")
    @click.option(
        "--role", type=CASE_ROLE, default="member", show_default=True, help="Their role in the case."
    )
    @click.option("--share-history", is_flag=True, help="Give them the keys of the updates so far.")
    @click.option(
        "--expires", metavar="DATE|+DAYSd",
        help="End their membership then (a date, an ISO time with its zone, or +30d), unless renewed.",
    )  # fmt: skip
    def add(
        case_ref: str, member: tuple[str, ...], role: str, share_history: bool, expires: str | None
    ) -> int:
        """Add members (all their devices) to a case.

        Where the case requires approval, a member of an agency not yet in it
        joins only once an owner of each agency in it has run `case approve`
        for them (with the same role and expiry); the approvals are found in
        the case, and any still missing are named.

        \b
        Examples:
          caseline case add 3f2a9c tz-tra:juma
          caseline case add 3f2a9c ke-kra:bob --role observer --share-history
          caseline case add 3f2a9c ug-ura:akello --expires +30d
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        users = [parse_member(m, role) for m in member]
        end = None if expires is None else parse_until(expires, "--expires", now=_now())
        return _membership(
            case_ref,
            lambda c, cid: c.add_members(cid, users, share_history=share_history, expires=end),
            "added {n} device(s)" + ("" if end is None else f", members until {when(end)}"),
        )

    @command(case, "renew")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("member", metavar="AGENCY:USER")
    @click.option(
        "--until", "until_", required=True, metavar="DATE|+DAYSd",
        help="The new end of their membership (a date, an ISO time with its zone, or +30d).",
    )  # fmt: skip
    def renew(case_ref: str, member: str, until_: str) -> int:
        """Give a member's time in a case a new end (owners); also keeps one whose time ran out.

        \b
        Examples:
          caseline case renew 3f2a9c ug-ura:akello --until 2027-03-31
          caseline case renew 3f2a9c ug-ura:akello --until +30d
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        agency, user, _ = parse_member(member)
        end = parse_until(until_, "--until", now=_now())
        return _membership(
            case_ref,
            lambda c, cid: c.renew(cid, agency, user, until=end),
            f"renewed {{n}} device(s) of {agency}:{user} until {when(end)}",
        )

    @command(case, "approve")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("member", metavar="AGENCY:USER")
    @click.option(
        "--role", type=CASE_ROLE, default="member", show_default=True, help="The role they are to have."
    )
    @click.option("--expires", metavar="DATE|+DAYSd", help="The end of membership the add will give them.")
    def approve(case_ref: str, member: str, role: str, expires: str | None) -> int:
        """Approve a member of another agency joining a case (owners), as the case may require.

        Your approval is signed against the case as it stands, for the
        member's devices as their agency certified them, with this role and
        expiry; it is posted in the case, where the owner who adds them finds
        it.  It is good for the next change of members only.

        \b
        Examples:
          caseline case approve 3f2a9c ug-ura:akello
          caseline case approve 3f2a9c ug-ura:akello --role observer --expires 2027-03-31
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        agency, user, _ = parse_member(member)
        end = None if expires is None else parse_until(expires, "--expires", now=_now())
        return _membership(
            case_ref,
            lambda c, cid: c.approve(cid, agency, user, role=role, expires=end),
            f"approved {{n}} device(s) of {agency}:{user} as {role}; whoever adds them finds it in the case",
        )

    @command(case, "require-approval")
    @click.argument("case_ref", metavar="CASE")
    def require_approval(case_ref: str) -> int:
        """Require that a member of a new agency is approved by an owner of each agency in the case.

        Signed into the case by a commit (owners); it cannot be turned off.

        \b
        Examples:
          caseline case require-approval 3f2a9c
        """

        async def turn_on(client: Client, case_id: bytes) -> list[bytes]:
            await client.require_approval(case_id)
            return []

        return _membership(case_ref, turn_on, "a new agency now needs the approval of each agency's owner")

    @command(case, "remove")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("member", nargs=-1, metavar="[AGENCY:USER]...")
    @click.option(
        "--device", multiple=True, metavar="HEX", help="Remove this one device only (its full id); repeat."
    )
    def remove(case_ref: str, member: tuple[str, ...], device: tuple[str, ...]) -> int:
        """Remove members, or single devices, from a case.

        \b
        Examples:
          caseline case remove 3f2a9c tz-tra:juma
          caseline case remove 3f2a9c --device 0123456789abcdef0123456789abcdef
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        if bool(member) == bool(device):
            raise UsageError("name members (AGENCY:USER) or --device IDs, not both")
        if device:
            ids = [hex_arg(d, "--device", 16) for d in device]
            return _membership(case_ref, lambda c, cid: c.remove_devices(cid, ids), "removed {n} device(s)")
        users = [(a, u) for a, u, _ in (parse_member(m) for m in member)]
        return _membership(case_ref, lambda c, cid: c.remove_members(cid, users), "removed {n} device(s)")

    @command(case, "role")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("member", metavar="AGENCY:USER")
    @click.argument("new_role", metavar="ROLE", type=CASE_ROLE)
    def role(case_ref: str, member: str, new_role: str) -> int:
        """Change a member's ROLE in a case (owner, member or observer).

        \b
        Examples:
          caseline case role 3f2a9c tz-tra:juma owner
        """
        from caseline.client.client import parse_member  # noqa: PLC0415 - with the client

        agency, user, _ = parse_member(member)

        async def change(client: Client, case_id: bytes) -> list[bytes]:
            await client.set_role(case_id, agency, user, new_role)
            return []

        return _membership(case_ref, change, f"{agency}:{user} is now {new_role}")

    @command(case, "rekey")
    @click.argument("case_ref", metavar="CASE")
    def rekey(case_ref: str) -> int:
        """Give a case a fresh secret, and drop its voided members (owners).

        Needed after a device its agency revoked made a commit in the case (its
        alarm names the entry): until an owner re-keys, nobody posts there.

        \b
        Examples:
          caseline case rekey 3f2a9c
        """
        return _membership(
            case_ref, lambda c, cid: c.rekey(cid), "re-keyed the case; dropped {n} voided device(s)"
        )

    @command(case, "repin")
    @click.argument("case_ref", metavar="[CASE]", required=False)
    def repin(case_ref: str | None) -> int:
        """Move members onto the certificates their agencies re-issued (owners).

        A case pins each member to the exact certificate they joined with.  When
        an agency re-issues a member's certificate (new scopes, a new validity)
        for the same device and keys, an owner re-pins it here: one commit per
        case that changes, in CASE or in every case you own.  A certificate
        for other keys is refused: that is a new device, to be added.

        \b
        Examples:
          caseline case repin 3f2a9c
          caseline case repin            # every case you own
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def go() -> list[Any]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref) if case_ref else None
                return list(await client.repin(case_id))

        from caseline.client.client import RepinIncompleteError  # noqa: PLC0415 - see the package docstring

        failure: RepinIncompleteError | None = None
        try:
            changed = run(go())
        except RepinIncompleteError as exc:  # the cases done are committed: say so, then fail
            changed, failure = exc.done, exc
        if out.as_json:
            out.data([_repinned_json(c) for c in changed])
        elif not changed and failure is None:
            out.say("nothing to re-pin: every member already holds the certificate its case pins")
        for c in changed:
            out.say(f"case {c.case_id.hex()}: re-pinned {len(c.devices)} device(s)")
            for change in c.changes:
                out.say(f"  {_cert_change(change)}")
        if failure is not None:
            raise failure
        return EXIT_OK


def _unfinished(count: int, where: str) -> str:
    """The posts with files this profile started and has not finished, and what finishes them."""
    posts = "1 post" if count == 1 else f"{count} posts"
    return (
        f"[yellow]{posts} with files not finished yet ({where})[/]: the next `caseline post` there"
        " uploads the rest from where it stopped, then posts"
    )


def _cert_change(change: CertChange) -> str:
    """``ke-kra:scanner: scopes alert, read → alert, read, seizure; valid until …``: what a re-pin grants."""
    from rich.markup import escape  # noqa: PLC0415 - rich only when printing for a person

    old, new = change.old, change.new
    parts = [f"role {old.role} → {new.role}"] if old.role != new.role else []
    scopes = ", ".join(old.scopes) or "none", ", ".join(new.scopes) or "none"
    parts.append(f"scopes {scopes[0]} → {scopes[1]}" if scopes[0] != scopes[1] else f"scopes {scopes[0]}")
    until = when(old.not_after), when(new.not_after)
    parts.append(
        f"valid until {until[0]} → {until[1]}" if until[0] != until[1] else f"valid until {until[0]}"
    )
    return escape(f"{change.name} (device {new.device_id.hex()[:8]}): {'; '.join(parts)}")


def _repinned_json(c: Repinned) -> dict[str, Any]:
    def cert(d: DeviceCert) -> dict[str, Any]:
        return {
            "role": d.role, "scopes": list(d.scopes), "serial": d.serial,
            "valid_from": when(d.not_before), "valid_until": when(d.not_after),
        }  # fmt: skip

    return {
        "case_id": c.case_id.hex(),
        "devices": [d.hex() for d in c.devices],
        "changes": [
            {"member": x.name, "device": x.device_id.hex(), "old": cert(x.old), "new": cert(x.new)}
            for x in c.changes
        ],
    }


def _now() -> int:
    """The client's clock, for a ``+30d`` typed on the command line."""
    from caseline.client.client import wall_clock  # noqa: PLC0415 - with the client

    return wall_clock()


def _membership(case_ref: str, act: Any, verb: str) -> int:
    """Run ``act(client, case_id)`` (it returns the devices it changed) and say ``verb``."""
    s = settings()
    out = Out(s.as_json)
    secret = s.unlock()

    async def go() -> tuple[bytes, list[bytes]]:
        async with await s.client(secret) as client:
            case_id = await client.resolve_case(case_ref)
            return case_id, await act(client, case_id)

    case_id, devices = run(go())
    # A history share leaves out what the updates' markings keep from the new agencies.
    withheld = getattr(devices, "withheld", [])
    if out.as_json:
        out.data(
            {
                "case_id": case_id.hex(),
                "devices": [d.hex() for d in devices],
                "withheld": [
                    {"seq": w.seq, "update_id": w.update_id.hex(), "reason": w.reason} for w in withheld
                ],
            }
        )
    out.say(verb.format(n=len(devices)))
    for w in withheld:
        out.say(f"[yellow]#{w.seq} withheld:[/] {safe(w.reason)}")
    return EXIT_OK


#: Fields that name another update of the same case, by content type.
REF_FIELDS: Final = {"reply": "in_reply_to", "ack": "of", "release": "of", "release-request": "of"}


async def _resolve_refs(
    client: Client, case_id: bytes, content_type: str, fields: dict[str, Any]
) -> CaseEvent | None:
    """Turn a short id, prefix or ``#seq`` into the full id of an update this device verified.

    Returns the update named, so that the person sees what they answer.  A
    reference is matched against every entry the views show, voided and purged
    ones included, so one that names an update voided since it was shown is
    refused, never resolved to another update sharing its prefix
    (``refs.resolve_update``).
    """
    name = REF_FIELDS.get(content_type)
    ref = fields.get(name) if name else None
    if name is None or not isinstance(ref, str):
        return None
    await client.sync(case_id)
    history = await client.history(case_id)
    updates = {e.seq: e for e in history if e.kind == "update" and e.update_id}
    by_seq = {seq: e.update_id for seq, e in updates.items() if e.update_id}
    target = resolve_update(
        ref,
        by_seq.values(),
        by_seq=by_seq,
        withdrawn=[e.update_id for e in history if e.kind == "voided" and e.update_id],
        gone={e.seq: e.kind for e in history if e.kind in ("voided", "purged")},
        case=case_id.hex()[:8],
    )
    fields[name] = target.hex()
    return next(e for e in updates.values() if e.update_id == target)


def _target_line(content_type: str, target: CaseEvent) -> str:
    """``replying to 9c1e07aa (#12) by ke-kra:alice``: the update a reference resolved to."""
    from rich.markup import escape  # noqa: PLC0415 - rich only when printing for a person

    verb = {"reply": "replying to", "release": "releasing", "release-request": "asking to release"}.get(
        content_type, "acknowledging"
    )
    author = f" by {escape(target.author.name)}" if target.author else ""
    return f"{verb} [bold]{short_id(target.update_id or b'')}[/] (#{target.seq}){author}"


def _read_update(field: tuple[str, ...], file: str | None) -> dict[str, Any]:
    if field and file:
        raise UsageError("give --field or --file, not both")
    if field:
        return parse_fields(field)
    if file in (None, "-"):
        if sys.stdin.isatty():
            print(STDIN_NOTICE, file=sys.stderr, flush=True)
        raw = sys.stdin.buffer.read()
    else:
        raw = Path(file).read_bytes()
    try:
        return content_schemas.decode_json(raw)
    except CaselineError as exc:
        raise UsageError(f"the update is not valid JSON: {exc}") from None


def _posting(root: click.Group) -> None:
    @command(root, "post")
    @click.argument("case_ref", metavar="CASE")
    @click.option(
        "--type", "content_type", required=True, type=click.Choice(sorted(content_schemas.CONTENT_TYPES)),
        help="The update's content type.",
    )  # fmt: skip
    @click.option(
        "--field",
        multiple=True,
        metavar="NAME=TEXT|NAME:=JSON",
        help="Set one field (a.b for nesting); repeat.",
    )
    @click.option("--file", metavar="FILE", help="The update as a JSON document ('-' for standard input).")
    @click.option(
        "--in-reply-to", metavar="UPDATE", help="reply: the update answered (short id, prefix or #SEQ)."
    )
    @click.option(
        "--of", "of_", metavar="UPDATE", help="ack: the update acknowledged (short id, prefix or #SEQ)."
    )
    @click.option(
        "--idempotency-key", metavar="KEY", help="Scripts: a second post with the same key does nothing."
    )
    @click.option(
        "--attach", multiple=True, metavar="FILE",
        help="A file to send with the update, encrypted (up to 16); repeat.",
    )  # fmt: skip
    @click.option(
        "--restriction", multiple=True, type=RESTRICTION, metavar="CODE",
        help="H3: a restriction every member's client enforces (no-evidence, no-dissemination,"
        " no-third-party, no-action-without-consent); repeat.",
    )  # fmt: skip
    def post(
        *,
        case_ref: str, content_type: str, field: tuple[str, ...], file: str | None,
        in_reply_to: str | None, of_: str | None, idempotency_key: str | None, attach: tuple[str, ...],
        restriction: tuple[str, ...],
    ) -> int:  # fmt: skip
        """Post an update to a case.

        The update comes from --field values, a JSON file, or JSON on standard input.

        Markings and language default to the case's; a reply or an ack names
        its update by the short id `case show` prints.  Files given with
        --attach are encrypted on this device and uploaded before the update
        is posted; an upload cut short (Ctrl-C, a lost network) goes on from
        where it stopped at the next `caseline post`.

        \b
        Examples:
          caseline post 3f2a9c --type note --field text="container MSKU1234565 flagged"
          caseline post 3f2a9c --type reply --in-reply-to 9c1e07aa --field text="on it"
          caseline post 3f2a9c --type ack --of '#12' --field state=received
          caseline post 3f2a9c --type note --field text="X-ray" --attach xray.png --attach manifest.pdf
          echo '{"text": "from a script"}' | caseline --json post 3f2a9c --type note
          caseline post 3f2a9c --type note --field text="informant" --field markings.handling=H3 \\
            --field markings.restrictions="Namanga only" --restriction no-evidence
        """
        s = settings()
        out = Out(s.as_json)
        files = check_files(attach) if attach else []
        fields = _read_update(field, file)
        if restriction:
            markings = fields.setdefault("markings", {})
            if not isinstance(markings, dict) or markings.get("handling", "H3") != "H3":
                raise UsageError("--restriction is for H3 updates: add --field markings.handling=H3")
            markings |= {"handling": "H3", "restriction_codes": sorted(set(restriction))}
        if in_reply_to is not None:
            if content_type != "reply":
                raise UsageError("--in-reply-to is for --type reply")
            fields["in_reply_to"] = in_reply_to
        if of_ is not None:
            if content_type != "ack":
                raise UsageError("--of is for --type ack")
            fields["of"] = of_
        secret = s.unlock()

        async def act() -> tuple[bytes, Any, Any, CaseEvent | None]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                target = await _resolve_refs(client, case_id, content_type, fields)
                if target is not None:  # said before the post: the person sees what they answer
                    out.say(_target_line(content_type, target))
                if files:
                    from caseline.client.cli.progress import progress  # noqa: PLC0415 - only when files move

                    with progress("uploading", as_json=out.as_json) as sink:
                        posted = await client.post_typed(
                            case_id, content_type, fields, idempotency_key=idempotency_key,
                            attachments=files, progress=sink,
                        )  # fmt: skip
                else:
                    posted = await client.post_typed(
                        case_id, content_type, fields, idempotency_key=idempotency_key
                    )
                return case_id, posted, await client.witness_status(case_id), target

        try:
            case_id, posted, status, target = run(act())
        except (UsageError, IntegrityError) as exc:
            raise in_cli_words(exc) from None
        final = not status.witnessed or status.final > posted.seq
        if out.as_json:
            out.data(
                {
                    "case_id": case_id.hex(), "update_id": posted.update_id.hex(), "seq": posted.seq,
                    "receipt_time": when(posted.receipt_time), "retries": posted.retries,
                    "witnessed": status.witnessed, "final": final,
                    "target": None if target is None else event_json(target),
                }
            )  # fmt: skip
        else:
            state = "unwitnessed" if not status.witnessed else "final" if final else "pending witness"
            out.say(
                f"posted {content_type} #{posted.seq} id {posted.update_id.hex()[:8]}"
                + (f" with {len(files)} file{'s' if len(files) > 1 else ''}" if files else "")
                + f" (receipt verified; {state})"
            )
        return EXIT_OK

    @command(root, "follow")
    @click.argument("cases", nargs=-1, metavar="[CASE]...")
    @click.option("--count", type=int, default=0, help="Stop after this many entries (0: never).")
    @click.option(
        "--for",
        "for_seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Stop after this many seconds.",
    )
    def follow(cases: tuple[str, ...], count: int, for_seconds: float | None) -> int:
        """Print verified entries as they arrive.

        From all your cases, or only those named.

        \b
        Examples:
          caseline follow
          caseline follow 3f2a9c --count 1
          caseline --json follow | jq -r .content.text
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> None:
            async with await s.client(secret) as client:
                ids = [await client.resolve_case(c) for c in cases] or None
                seen = 0

                async def go() -> None:
                    nonlocal seen
                    async for event in client.follow(ids):
                        if out.as_json:
                            print(json.dumps(event_json(event), ensure_ascii=False), flush=True)
                        else:
                            entry(out, event, case=True)
                        seen += 1
                        if count and seen >= count:
                            return

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(go(), timeout=for_seconds)

        run(act())
        return EXIT_OK

    @command(root, "verify")
    @click.argument("case_ref", metavar="CASE")
    def verify(case_ref: str) -> int:
        """Re-verify a case; print the head code partners compare.

        \b
        Examples:
          caseline verify 3f2a9c
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> tuple[bytes, Any, Any]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                return case_id, await client.verify_case(case_id), await client.witness_status(case_id)

        case_id, report, status = run(act())
        if out.as_json:
            out.data(
                {
                    "case_id": case_id.hex(), "verified": True, "entries": report.count,
                    "epoch": report.epoch,
                    "head": report.head.hex(), "head_code": report.code, "updates": report.updates,
                    "readable": report.readable, "voided": report.voided, "witness": witness_json(status),
                    "members": [
                        {
                            "member": m.author.name, "device": m.author.device_id.hex(), "role": m.role,
                            "expires": None if m.expires is None else when(m.expires),
                        }
                        for m in report.members
                    ],
                }
            )  # fmt: skip
            return EXIT_OK
        out.panel(
            f"{entries(report.count)} verified from genesis, epoch {report.epoch}, "
            f"{report.readable}/{report.updates} updates readable here"
            + (f", {report.voided} withheld (sent by revoked or voided devices)" if report.voided else "")
            + "\n"
            f"members: {', '.join(f'{m.author.name} ({m.role}{until(m.expires)})' for m in report.members)}\n"
            f"head code: [bold]{report.code}[/] — the same code on your partner's screen "
            "means you both hold the same history\n" + witness_line(status),
            title=f"case {case_id.hex()} verified",
        )
        return EXIT_OK

    @root.group("log")
    @global_options
    def log() -> None:
        """The broker's log as your agency's witnesses see it.

        \b
        Examples:
          caseline log submit
        """

    @command(log, "submit")
    def submit() -> int:
        """Hand the broker's newest checkpoint to your agency's witnesses.

        \b
        Examples:
          caseline log submit
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> list[tuple[str, str]]:
            async with await s.client(secret) as client:
                return list(await client.submit_to_witnesses())

        outcomes = run(act())
        if out.as_json:
            out.data([{"witness": name, "outcome": what} for name, what in outcomes])
        elif not outcomes:
            out.say("your agency lists no witnesses")
        for name, what in outcomes:
            out.say(f"{name}: {what}")
        return EXIT_OK


def other_object(data: bytes) -> str | None:
    """Name the caseline object ``data`` is, if it is one of those often mistaken for a bundle.

    A file of the wrong kind is the caller's mistake (exit 2); only what is
    meant to be a bundle and fails to verify is untrusted data (exit 3).
    """
    from caseline.crypto.certs import open_enrolment_request  # noqa: PLC0415 - with the command
    from caseline.schemas.wire import DeviceCert, RevocationList, decode_signed  # noqa: PLC0415

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


def certificate_file(path: Path) -> bytes:
    """The device certificate in ``path``; another caseline file there is the caller's mistake."""
    from caseline.schemas.wire import DeviceCert, decode_signed  # noqa: PLC0415 - with the command

    data = path.read_bytes()
    try:
        DeviceCert.decode(decode_signed(data)[0])
    except CaselineError:
        what = other_object(data) or "not a caseline file"
        raise UsageError(f"{path} is {what}, not the certificate from your administrator") from None
    return data


def _evidence(root: click.Group) -> None:
    @root.group("evidence")
    @global_options
    def evidence() -> None:
        """Export a case as an evidence bundle, and verify one offline.

        \b
        Examples:
          caseline evidence export 3f2a9c -o case.evidence
          caseline evidence verify case.evidence --pin ke-kra=123456789012345678901234567890
        """

    @command(evidence, "export")
    @click.argument("case_ref", metavar="CASE")
    @click.option(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="Where to write the bundle: a new file, or with attachments a new folder.",
    )
    @click.option("--force", is_flag=True, help="Replace OUT if it exists.")
    @click.option("--seq", type=int, multiple=True, help="Disclose only these log positions; repeat.")
    @click.option(
        "--with-attachments",
        is_flag=True,
        help="Write a folder: the bundle, and the files of the disclosed updates, verified.",
    )
    @click.option(
        "--attachment",
        "attachments",
        multiple=True,
        metavar="SEQ:INDEX",
        help="Include only this attachment (the update's log position and its index); repeat.",
    )
    def export(
        case_ref: str,
        *,
        output: str,
        force: bool,
        seq: tuple[int, ...],
        with_attachments: bool,
        attachments: tuple[str, ...],
    ) -> int:
        """Write a signed evidence bundle of CASE to a new owner-only file.

        With --with-attachments (or --attachment) OUT is a new folder holding
        bundle.caseline, the disclosed updates' files under attachments/ and a
        MANIFEST.txt; each file is downloaded and verified before it is written.

        \b
        Examples:
          caseline evidence export 3f2a9c -o case.evidence
          caseline evidence export 3f2a9c -o excerpt.evidence --seq 3 --seq 4
          caseline evidence export 3f2a9c -o case-export --with-attachments
          caseline evidence export 3f2a9c -o photo-only --seq 3 --attachment 3:0
        """
        s = settings()
        out = Out(s.as_json)
        target = Path(output)
        if with_attachments or attachments:
            keys = parse_attachment_keys(attachments) if attachments else None
            return _export_folder(out, case_ref, target, force=force, seqs=seq, attachments=keys)
        refuse_existing(target, force=force)
        secret = s.unlock()

        async def act() -> tuple[bytes, Any, bytes]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                plan = await client.evidence_plan(case_id, seq or None)
                return case_id, plan, await client.export_evidence(case_id, plan.disclose)

        case_id, plan, bundle = run(act())
        write_private(target, bundle, force=force)
        if out.as_json:
            out.data({"case_id": case_id.hex(), "bundle": output, "bytes": len(bundle)} | _plan_json(plan))
        out.say(f"wrote evidence bundle {output} ({len(bundle)} bytes)")
        _say_plan(out, plan)
        return EXIT_OK

    @command(evidence, "verify")
    @click.argument("bundle")
    @click.option(
        "--pin",
        multiple=True,
        required=True,
        metavar="AGENCY=FINGERPRINT",
        help="A trusted agency root; repeat.",
    )
    def verify(bundle: str, pin: tuple[str, ...]) -> int:
        """Verify an evidence BUNDLE (a file, or an export folder) offline: it needs only the pins.

        For a folder, every file under attachments/ must be one the disclosed
        updates signed for (size and SHA-256); attachments left out are listed
        as not included.

        \b
        Examples:
          caseline evidence verify case.evidence --pin ke-kra=123456789012345678901234567890
          caseline evidence verify case-export --pin ke-kra=123456789012345678901234567890
        """
        from caseline.client.client import verify_bundle  # noqa: PLC0415 - with the command
        from caseline.client.evidence_dir import check_export, read_bundle  # noqa: PLC0415 - with the command
        from caseline.crypto.evidence import bundle_agencies  # noqa: PLC0415 - with the command

        out = Out(settings().as_json)
        pins = parse_pins(pin)
        folder = Path(bundle) if Path(bundle).is_dir() else None
        data = Path(bundle).read_bytes() if folder is None else read_bundle(folder)
        not_a_bundle = other_object(data)
        if not_a_bundle:
            raise UsageError(f"{bundle} is {not_a_bundle}, not an evidence bundle")
        try:
            report = verify_bundle(data, pins)
        except UntrustedError:
            # Most often an agency in the bundle that was not pinned: the caller's mistake.
            missing = [agency for agency in bundle_agencies(data) if agency not in pins]
            if missing:
                raise UsageError(
                    " and ".join(f"add --pin {a}=FINGERPRINT" for a in missing)
                    + f" (read it from {', '.join(missing)}'s administrator): the bundle holds their members"
                ) from None
            raise
        except MalformedError as exc:
            if type(exc) is not MalformedError:  # a finer verdict (content, version) says more
                raise
            raise MalformedError(f"{bundle} is not a caseline evidence bundle, or it is damaged") from None
        except IntegrityError as exc:  # its parts do not fit together: say it of the bundle
            raise type(exc)(f"the evidence bundle is damaged or was altered: {exc}") from None
        if folder is not None:
            try:
                report = check_export(folder, report, data)
            except IntegrityError as exc:
                raise type(exc)(f"the evidence export {bundle} is not as exported: {exc}") from None
        _print_bundle(out, report)
        return EXIT_OK


def _export_folder(
    out: Out,
    case_ref: str,
    target: Path,
    *,
    force: bool,
    seqs: tuple[int, ...],
    attachments: tuple[tuple[int, int], ...] | None,
) -> int:
    """``evidence export --with-attachments``: a folder with the bundle and its files, verified."""
    from caseline.client.cli.progress import progress  # noqa: PLC0415 - a command that moves files
    from caseline.client.evidence_dir import refuse_existing_export  # noqa: PLC0415 - with the command

    s = settings()
    refuse_existing_export(target, force=force)
    secret = s.unlock()

    async def act() -> tuple[Any, Any]:
        with progress("exporting", as_json=s.as_json) as sink:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                plan = await client.evidence_plan(case_id, seqs or None)
                return plan, await client.export_evidence_folder(
                    case_id, target, plan.disclose, attachments=attachments, force=force, progress=sink
                )

    plan, report = run(act())
    included = [a for a in report.attachments if a.included]
    if out.as_json:
        out.data(
            {
                "case_id": report.case_id.hex(),
                "export": str(target),
                "records": len(report.records),
                "attachments": [_attachment_json(a) for a in report.attachments],
            }
            | _plan_json(plan)
        )
    out.say(
        f"wrote evidence export {safe(str(target))}: bundle of {len(report.records)} "
        f"update{'s' if len(report.records) != 1 else ''}, {len(included)} of "
        f"{len(report.attachments)} attachment{'s' if len(report.attachments) != 1 else ''} verified"
    )
    for a in report.attachments:
        where = f"attachments/{a.file}" if a.file is not None else "not included"
        out.say(f"  #{a.seq}:{a.index} {safe(where)}  sha256 {a.ref.sha256.hex()}", whole=True)
    _say_plan(out, plan)
    return EXIT_OK


def _plan_json(plan: Any) -> dict[str, Any]:
    """An export's ``withheld`` updates and the ``releases`` it disclosed because others rely on them."""
    return {
        "withheld": [
            {
                "seq": w.seq, "update_id": w.update_id.hex(), "markings": w.markings,
                "provider": w.provider, "reason": w.reason,
            }
            for w in plan.withheld
        ],
        "releases": list(plan.releases),
    }  # fmt: skip


def _say_plan(out: Out, plan: Any) -> None:
    """The updates the markings kept out of the bundle, each with how to ask for its release."""
    for seq in plan.releases:
        out.say(f"  #{seq} disclosed too: a release the disclosed updates rely on")
    if plan.withheld:
        out.say(
            f"{len(plan.withheld)} update{'s' if len(plan.withheld) != 1 else ''} withheld"
            " (the originator has not released them for evidence):"
        )
    for w in plan.withheld:
        out.say(f"  {safe(w.text)}", whole=True)


def _attachment_json(a: Any) -> dict[str, Any]:
    return {
        "seq": a.seq,
        "index": a.index,
        "update_id": a.update_id.hex(),
        "name": a.ref.name,
        "media_type": a.ref.media_type,
        "size": a.ref.size,
        "sha256": a.ref.sha256.hex(),
        "sender": f"{a.sender.agency_id}:{a.sender.user_id}",
        "device": a.sender.device_id.hex(),
        "file": None if a.file is None else f"attachments/{a.file}",
        "status": "verified" if a.included else "not included",
    }


def _quoted(name: str) -> str:
    """A partner's file name in quotes, its control and format characters shown as escapes."""
    return json.dumps(name, ensure_ascii=False)


def _disclosed_markings(content_type: str, content: bytes) -> dict[str, Any] | None:
    """A disclosed update's ``markings``, as ``case show`` shows them; None for a system entry."""
    if content_type not in content_schemas.CONTENT_TYPES:
        return None
    try:
        found = content_schemas.decode_json(content).get("markings")
    except CaselineError:
        return None
    return found if isinstance(found, dict) else None


#: What each reason of a voiding means, for the reader of evidence (PROTOCOL.md §5.3).
VOID_WORDS: Final = {
    "voided-commit": "VOIDED, made after its committer's device was revoked; it granted nothing, by",
    "revoked": "listed but voided, its device revoked by then",
    "added-by-voided-commit": "listed but voided, added by a voided commit",
    "voided-before": "listed but voided, carried over voided",
}


def _print_bundle(out: Out, report: Any) -> None:
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
    voided = [
        {
            "seq": v.seq, "epoch": v.epoch, "agency": v.device.agency_id, "user": v.device.user_id,
            "device": v.device.device_id.hex(), "reason": v.reason,
        }
        for v in report.voided
    ]  # fmt: skip
    releases = [
        {
            "seq": u.seq, "update_id": u.update_id.hex(), "release_seq": u.release_seq,
            "release_id": u.release_id.hex(), "purpose": u.purpose,
            "released_by": f"{u.releaser.agency_id}:{u.releaser.user_id}",
        }
        for u in report.releases
    ]  # fmt: skip
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
                "voided": voided,
                "attachments": [_attachment_json(a) for a in report.attachments],
                "releases": releases,
            }
        )
        return

    out.say(f"evidence for case [bold]{report.case_id.hex()}[/]: VERIFIED")
    for r, row in zip(report.records, records, strict=True):
        marks = _disclosed_markings(r.update.record.content_type, r.update.record.content)
        out.block(
            [
                f"[bold]{str(row['update_id'])[:8]}[/]", f"#{row['seq']}", f"[dim]{row['time']}[/]",
                f"[bold]{safe(str(row['author']))}[/]", safe(str(row["content_type"])), markings_text(marks),
            ],
            [("restrictions", safe(str(marks.get("restrictions") or "")) if marks else "")],
        )  # fmt: skip
    if report.attachments:
        out.say("attachments of the disclosed updates (log position:index):")
    for a in report.attachments:
        out.block(
            [
                f"[bold]#{a.seq}:{a.index}[/]", safe(_quoted(a.ref.name)), a.ref.media_type,
                f"{a.ref.size} bytes", "VERIFIED" if a.included else "not included",
            ],
            [
                ("file", safe(f"attachments/{a.file}") if a.file is not None else ""),
                ("sha256", a.ref.sha256.hex()),
                ("sender", safe(f"{a.sender.agency_id}:{a.sender.user_id}")),
            ],
        )  # fmt: skip
    for u in releases:
        out.say(
            f"#{u['seq']} disclosed under release #{u['release_seq']} for {u['purpose']}"
            f" by {safe(str(u['released_by']))}"
        )
    out.say(
        f"exported by {report.exporter.agency_id}:{report.exporter.user_id} "
        f"at {when(report.exported_at)}; log of {entries(report.log_length)} signed by the broker"
    )
    for v in voided:
        who = f"{safe(str(v['agency']))}:{safe(str(v['user']))} (device {v['device']})"
        out.say(f"commit #{v['seq']}: {VOID_WORDS.get(str(v['reason']), str(v['reason']))}: {who}")
    if checkpoint is not None:
        origin, size, root = (checkpoint[k] for k in ("origin", "size", "root"))
        out.say(f"checkpoint of the broker's log at size {size}, its origin and root:")
        out.say(f"  {safe(str(origin))}", whole=True)  # each whole on its line, to compare and copy
        out.say(f"  {root}", whole=True)
    if report.witnessed and report.witnessed_at is not None:
        out.say(f"WITNESSED at {when(report.witnessed_at)} by:")
        for w in witnesses:
            out.say(f"  {safe(w['name'])} ({w['agency']}) at {w['time']}")
    else:
        out.say(UNWITNESSED_LINE)
