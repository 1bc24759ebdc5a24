"""The agency administrator's commands: the root key, certificates, revocations, witnesses.

``agency publish --from`` is the networked half of an offline root: it needs
no profile and no passphrase, only the folder ``agency export`` wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from caseline.client.cli.files import refuse_existing, write_private
from caseline.client.cli.output import Out, safe, when
from caseline.client.cli.params import KDF, choice, hex_arg, parse_instant, parse_witness
from caseline.client.cli.settings import Settings, command, global_options, run, settings
from caseline.schemas.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from caseline.client.admin import AgencyAdmin, Published

REASONS = choice("unspecified", "key-compromise", "device-lost", "superseded", "left-agency")


def _with_admin(s: Settings, act: Any) -> Any:
    """Open the agency root (asking for its passphrase first), run ``act(admin)``, close it."""
    secret = s.passphrase(what="agency root")

    async def go() -> Any:
        admin = await s.admin(secret)
        try:
            return await act(admin)
        finally:
            await admin.close()

    return run(go())


def report_published(result: Published, out: Out) -> None:
    if out.as_json:
        out.data({"certificates": result.certificates, "revocation_list": result.revocation_number})
    out.say(f"published {result.certificates} certificate(s), revocation list #{result.revocation_number}")


def _root_panel(out: Out, admin: AgencyAdmin) -> None:
    data = {
        "agency": admin.agency_id,
        "root_key": admin.root.public_key.hex(),
        "fingerprint": admin.fingerprint,
    }
    if out.as_json:
        out.data(data)
        return
    out.panel(
        f"root key {data['root_key']}\nfingerprint [bold]{admin.fingerprint}[/]\n"
        "Read the fingerprint aloud to each partner agency and to the broker's operator.",
        title=f"agency {admin.agency_id}",
    )


def register(root: click.Group) -> None:
    """Add ``caseline agency …`` to the ``caseline`` group."""

    @root.group("agency")
    @global_options
    def agency() -> None:
        """Agency administration: root key, certificates, revocations.

        Witnesses are listed here too, and everything goes to the broker by `agency publish`.

        \b
        Examples:
          caseline --profile root agency init ke-kra
          caseline --profile root agency issue alice.req -o alice.cert
          caseline --profile root agency publish --server https://broker.example:8443
        """

    @command(agency, "init")
    @click.argument("agency_id", metavar="AGENCY")
    @click.option("--kdf", type=KDF, default="moderate", show_default=True, help="Passphrase hardening.")
    def init(agency_id: str, kdf: str) -> int:
        """Create the root key of AGENCY in this profile, locked with a passphrase.

        \b
        Examples:
          caseline --profile root agency init ke-kra
        """
        from caseline.client.admin import AgencyAdmin  # noqa: PLC0415 - administrators only

        s = settings()
        out = Out(s.as_json)
        secret = s.passphrase(new=True, what="agency root")
        if not secret:
            raise UsageError("an agency root needs a passphrase")

        async def act() -> None:
            admin = await AgencyAdmin.create(s.directory(), agency_id, passphrase=secret, kdf=kdf)
            try:
                _root_panel(out, admin)
            finally:
                await admin.close()

        run(act())
        return EXIT_OK

    @command(agency, "show")
    def show() -> int:
        """Show the agency's root key and the fingerprint partners pin.

        \b
        Examples:
          caseline --profile root agency show
          caseline --profile root agency show --json
        """
        s = settings()
        out = Out(s.as_json)

        async def act(admin: AgencyAdmin) -> None:
            _root_panel(out, admin)

        _with_admin(s, act)
        return EXIT_OK

    @command(agency, "issue")
    @click.argument("request", metavar="REQUEST")
    @click.option(
        "--role",
        type=choice("officer", "supervisor", "bot", "admin"),
        default="officer",
        show_default=True,
        help="The device's role.",
    )
    @click.option("--scope", multiple=True, help="Bots: a content type it may post, or 'read'; repeat.")
    @click.option("--days", type=int, default=365, show_default=True, help="Days the certificate is valid.")
    @click.option(
        "-o", "--output", required=True, metavar="FILE", help="Where to write the certificate (a new file)."
    )
    @click.option("--force", is_flag=True, help="Replace FILE if it exists.")
    def issue(*, request: str, role: str, scope: tuple[str, ...], days: int, output: str, force: bool) -> int:
        """Certify a device from its enrolment REQUEST (the file `caseline init` wrote).

        \b
        Examples:
          caseline --profile root agency issue alice.req -o alice.cert
          caseline --profile root agency issue bot.req --role bot --scope alert --scope read -o bot.cert
        """
        from caseline.client.cli.officer import other_object  # noqa: PLC0415 - with the command

        s = settings()
        out = Out(s.as_json)
        target = Path(output)
        refuse_existing(target, force=force)  # before minting: no certificate for nothing
        data = Path(request).read_bytes()
        what = other_object(data)
        if what != "an enrolment request":  # checked before the root's passphrase is asked
            raise UsageError(
                f"{request} is {what or 'not a caseline file'}, not an enrolment request"
                " (the file `caseline init` wrote)"
            )

        async def act(admin: AgencyAdmin) -> bytes:
            return await admin.issue(data, role=role, scopes=list(scope), days=days)

        cert = _with_admin(s, act)
        write_private(target, cert, force=force)
        if out.as_json:
            out.data({"certificate": output})
        out.say(f"issued a certificate ({role}): {output}")
        return EXIT_OK

    @command(agency, "revoke")
    @click.argument("device", metavar="DEVICE")
    @click.option(
        "--reason", type=REASONS, default="unspecified", show_default=True, help="Why it is revoked."
    )
    @click.option(
        "--since", metavar="TIME",
        help="Backdate to the last moment the key was known safe (ISO 8601 with a zone: 2026-11-20T06:00Z).",
    )  # fmt: skip
    def revoke(device: str, reason: str, since: str | None) -> int:
        """Revoke DEVICE (its full hex id, from `agency list`); then run `agency publish`.

        \b
        Examples:
          caseline --profile root agency revoke 0123456789abcdef0123456789abcdef --reason device-lost
          caseline --profile root agency revoke 5e3fa1c08b2d4e6f7a9b0c1d2e3f4051 --reason key-compromise --since 2026-11-20T06:00Z
        """  # noqa: E501 - an example is a whole line, to copy
        s = settings()
        out = Out(s.as_json)
        instant = parse_instant(since) if since else None
        device_id = hex_arg(device, "DEVICE", 16)

        async def act(admin: AgencyAdmin) -> bytes:
            return await admin.revoke(device_id, reason=reason, since=instant)

        crl = _with_admin(s, act)
        if out.as_json:
            out.data({"revoked": device, "since": since, "list_bytes": len(crl)})
        out.say(f"revoked {device}; run `caseline agency publish` to cut it off")
        return EXIT_OK

    @command(agency, "list")
    def issued() -> int:
        """List the certificates this root issued, whether each is published, and revocations.

        \b
        Examples:
          caseline --profile root agency list
          caseline --profile root agency list --json
        """
        s = settings()
        out = Out(s.as_json)

        async def act(admin: AgencyAdmin) -> tuple[str, list[dict[str, Any]]]:
            return admin.agency_id, [
                {
                    "serial": i.serial, "user": i.user_id, "role": i.role, "scopes": list(i.scopes),
                    "device": i.device_id.hex(), "issued": when(i.issued_at),
                    "valid_from": when(i.not_before), "valid_until": when(i.not_after),
                    "published": i.published,
                    "revoked": when(i.revoked_at) if i.revoked_at is not None else None,
                    "reason": i.revocation_reason,
                }
                for i in await admin.issued()
            ]  # fmt: skip

        agency_id, rows = _with_admin(s, act)
        if out.as_json:
            out.data(rows)
            return EXIT_OK
        out.say(f"certificates issued by {safe(agency_id)}: {len(rows)}")
        for row in rows:
            revoked = f"{row['revoked']} ({safe(str(row['reason']))})" if row["revoked"] else "no"
            out.block(
                [f"serial {row['serial']}", f"[bold]{safe(str(row['user']))}[/]", str(row["role"])],
                [
                    ("device", str(row["device"])), ("scopes", ", ".join(row["scopes"]) or "-"),
                    ("issued", str(row["issued"])), ("valid", f"{row['valid_from']} to {row['valid_until']}"),
                    ("published", "yes" if row["published"] else "no"), ("revoked", revoked),
                ],
            )  # fmt: skip
        return EXIT_OK

    @command(agency, "export")
    @click.argument("folder", metavar="FOLDER")
    def export(folder: str) -> int:
        """Offline root: write certificates and the revocation list to a new or empty FOLDER.

        \b
        Examples:
          caseline --profile root agency export /media/usb/kra-1
        """
        s = settings()
        out = Out(s.as_json)
        if Path(folder).is_dir() and any(Path(folder).iterdir()):  # before the passphrase is asked
            raise UsageError(f"{folder} is not empty; export into a new or empty folder")

        async def act(admin: AgencyAdmin) -> Any:
            return await admin.export(Path(folder))

        result = _with_admin(s, act)
        if out.as_json:
            out.data({"certificates": result.certificates, "revocation_list": result.revocation_number})
        out.say(
            f"wrote {result.certificates} certificate(s) and revocation list #{result.revocation_number}"
            f" to {folder}; on a networked machine run"
            f" `caseline agency publish --from {folder} --server URL`"
        )
        return EXIT_OK

    @command(agency, "witnesses")
    @click.option(
        "--witness", multiple=True, metavar="VKEY@URL",
        help="A witness this agency runs: its vkey (`caseline-witness vkey`) and URL; repeat for more.",
    )  # fmt: skip
    def witnesses(witness: tuple[str, ...]) -> int:
        """List the agency's witnesses, or set them with --witness (then run `agency publish`).

        \b
        Examples:
          caseline --profile root agency witnesses
          caseline --profile root agency witnesses --witness 'witness.ke-kra.example/w1+eb8c794e+BPoH1kzaWoxRWWOgQ0dUN4QNwXnrSCugzEwoFBoTei8t@https://w1.ke-kra.example'
        """
        from caseline.crypto.keys import witness_fingerprint  # noqa: PLC0415 - with the command
        from caseline.schemas.wire import WitnessList, decode_signed  # noqa: PLC0415 - with the command

        s = settings()
        out = Out(s.as_json)
        listed = [parse_witness(w) for w in witness]

        async def act(admin: AgencyAdmin) -> bytes | None:
            if listed:
                await admin.set_witnesses(listed)
            return await admin.witness_list()

        signed = _with_admin(s, act)
        current = [] if signed is None else list(WitnessList.decode(decode_signed(signed)[0]).witnesses)
        rows = [
            {
                "name": w.name,
                "key": w.public_key.hex(),
                "url": w.url,
                "fingerprint": witness_fingerprint(w.name, w.public_key),
            }
            for w in current
        ]
        if out.as_json:
            out.data(rows)
        elif not rows:
            out.say("no witnesses listed: cases with this agency's members stay unwitnessed")
        else:
            for row in rows:
                out.block(
                    [f"[bold]{safe(str(row['name']))}[/]"],
                    [("url", safe(str(row["url"]))), ("fingerprint", str(row["fingerprint"]))],
                )
            if listed:
                out.say("signed a new witness list; run `caseline agency publish` to send it to the broker")
        return EXIT_OK

    @command(agency, "publish")
    @click.option("--server", required=True, metavar="URL", help="The broker's URL.")
    @click.option(
        "--from", "from_folder", metavar="FOLDER",
        help="Publish what `agency export` wrote; needs no root key or passphrase.",
    )  # fmt: skip
    def publish(server: str, from_folder: str | None) -> int:
        """Push certificates, the revocation list and the witness list to the broker.

        \b
        Examples:
          caseline --profile root agency publish --server https://broker.example:8443
          caseline agency publish --from /media/usb/kra-1 --server https://broker.example:8443
        """
        from caseline.client.client import broker_url  # noqa: PLC0415 - with the command
        from caseline.client.transport import BrokerConnection  # noqa: PLC0415 - with the command

        s = settings()
        out = Out(s.as_json)

        async def with_broker(act: Any) -> Any:
            broker = BrokerConnection(broker_url(server), keys=None, server_key=None, timeout=s.timeout)
            try:
                return await act(broker)
            finally:
                await broker.close()

        if from_folder:
            from caseline.client.admin import publish_folder  # noqa: PLC0415 - administrators only

            result = run(with_broker(lambda b: publish_folder(b, Path(from_folder))))
        else:
            result = _with_admin(s, lambda admin: with_broker(admin.publish))
        report_published(result, out)
        return EXIT_OK
