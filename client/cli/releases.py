"""``caseline release`` and ``caseline release-request``: an originator's permission, asked and given.

A handling code binds every other agency until the update's provider lifts
it (PROTOCOL.md §6.7): the author, or a supervisor of the author's agency,
posts a signed ``release``; anyone may ask for one inside the case with a
``release-request``.  Both name the update as everywhere else (short id,
prefix or ``#SEQ``).  Who may release is checked before anything is sealed,
by the same rule book every member's client judges the release with.
"""

from __future__ import annotations

from typing import Any

import click
from caseline.client.cli.attachments import in_cli_words
from caseline.client.cli.officer import _resolve_refs, _target_line
from caseline.client.cli.output import Out, when
from caseline.client.cli.params import HANDLING, RESTRICTION, TLP, choice
from caseline.client.cli.settings import command, run, settings
from caseline.client.refs import short_id
from caseline.schemas.errors import EXIT_OK, IntegrityError, UsageError

PURPOSE = choice("evidence", "disseminate", "third-party", "downgrade")


def register(root: click.Group) -> None:
    @command(root, "release")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("ref", metavar="UPDATE")
    @click.option("--for", "purpose", required=True, type=PURPOSE, help="What the release permits.")
    @click.option("--third-party", metavar="AGENCY", help="third-party: the one agency it may go to.")
    @click.option("--lift", multiple=True, type=RESTRICTION, help="H3: a restriction code lifted; repeat.")
    @click.option("--recipient", multiple=True, metavar="AGENCY", help="Only for this agency; repeat.")
    @click.option("--expires", metavar="RFC3339", help="No longer counts from then (2026-12-31T00:00:00Z).")
    @click.option("--downgrade-to", metavar="H/TLP", help="downgrade: the lowest markings, e.g. H1/AMBER.")
    @click.option("--note", metavar="TEXT", help="Why, or on what terms (shown to every member).")
    def release(
        *,
        case_ref: str, ref: str, purpose: str, third_party: str | None, lift: tuple[str, ...],
        recipient: tuple[str, ...], expires: str | None, downgrade_to: str | None, note: str | None,
    ) -> int:  # fmt: skip
        """Release an update you provided: for evidence, dissemination, a third party or a downgrade.

        Only the update's author, or a supervisor device of the author's agency,
        may; every member's client ignores (and marks) anyone else's release.

        \b
        Examples:
          caseline release 3f2a9c 9c1e07aa --for evidence --note "for CR 114/2026"
          caseline release 3f2a9c '#12' --for disseminate --recipient ug-ura --expires 2026-12-31T00:00:00Z
          caseline release 3f2a9c 9c1e07aa --for downgrade --downgrade-to H1/AMBER
          caseline release 3f2a9c 9c1e07aa --for third-party --third-party ke-kpa --lift no-third-party
        """
        if (purpose == "third-party") != (third_party is not None):
            raise UsageError("--third-party AGENCY goes with --for third-party, and only with it")
        if (purpose == "downgrade") != (downgrade_to is not None):
            raise UsageError("--downgrade-to H/TLP goes with --for downgrade, and only with it")
        to = None if downgrade_to is None else _markings_arg(downgrade_to)
        fields = {
            "third_party": third_party, "lifts": list(lift) or None, "recipients": list(recipient) or None,
            "expires": expires, "to": to, "note": note,
        }  # fmt: skip
        return _post(case_ref, ref, "release", purpose, fields)

    @command(root, "release-request")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("ref", metavar="UPDATE")
    @click.option("--for", "purpose", required=True, type=PURPOSE, help="What you ask it to be released for.")
    @click.option("--third-party", metavar="AGENCY", help="third-party: the agency it would go to.")
    @click.option("--lift", multiple=True, type=RESTRICTION, help="H3: a restriction code to lift; repeat.")
    @click.option(
        "--reason", required=True, metavar="TEXT", help="Why you need it (the originator reads it)."
    )
    def release_request(
        *, case_ref: str, ref: str, purpose: str, third_party: str | None, lift: tuple[str, ...], reason: str
    ) -> int:
        """Ask an update's originator, inside the case, to release it.

        \b
        Examples:
          caseline release-request 3f2a9c 9c1e07aa --for evidence --reason "exhibit in CR 114/2026"
          caseline release-request 3f2a9c '#12' --for downgrade --reason "to brief the port police"
        """
        if (purpose == "third-party") != (third_party is not None):
            raise UsageError("--third-party AGENCY goes with --for third-party, and only with it")
        fields = {"third_party": third_party, "lifts": list(lift) or None, "reason": reason}
        return _post(case_ref, ref, "release-request", purpose, fields)


def _markings_arg(text: str) -> dict[str, str]:
    """``H1/AMBER`` (or ``H1/TLP:AMBER``) as the ``to`` of a downgrade."""
    handling, _, tlp = text.partition("/")
    tlp = tlp.removeprefix("TLP:")
    if handling not in HANDLING.choices or tlp not in TLP.choices:
        raise UsageError(f"--downgrade-to {text!r}: give a handling code and a TLP, e.g. H1/AMBER")
    return {"handling": handling, "tlp": tlp}


def _post(case_ref: str, ref: str, content_type: str, purpose: str, extra: dict[str, Any]) -> int:
    s = settings()
    out = Out(s.as_json)
    secret = s.unlock()
    fields: dict[str, Any] = {
        "of": ref,
        "purpose": purpose,
        **{k: v for k, v in extra.items() if v is not None},
    }

    async def act() -> tuple[bytes, Any]:
        async with await s.client(secret) as client:
            case_id = await client.resolve_case(case_ref)
            target = await _resolve_refs(client, case_id, content_type, fields)
            if target is not None:
                out.say(_target_line(content_type, target))
            return case_id, await client.post_typed(case_id, content_type, fields)

    try:
        case_id, posted = run(act())
    except (UsageError, IntegrityError) as exc:
        raise in_cli_words(exc) from None
    if out.as_json:
        out.data(
            {
                "case_id": case_id.hex(), "update_id": posted.update_id.hex(), "seq": posted.seq,
                "content_type": content_type, "of": fields["of"], "purpose": purpose,
                "receipt_time": when(posted.receipt_time),
            }
        )  # fmt: skip
    else:
        what = "released" if content_type == "release" else "asked for a release of"
        out.say(
            f"{what} {short_id(bytes.fromhex(fields['of']))} for {purpose}:"
            f" {content_type} #{posted.seq} id {posted.update_id.hex()[:8]}"
        )
    return EXIT_OK
