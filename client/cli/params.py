"""What the values typed on the command line mean, checked before anything is done.

A malformed value is the caller's mistake: a ``UsageError`` naming the
option and what it expects (exit 2), never the parser's own exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import click
from caseline.crypto import note
from caseline.schemas import content as content_schemas
from caseline.schemas.errors import CaselineError, MalformedError, UsageError
from caseline.schemas.wire import Witness


def hex_arg(text: str, name: str, size: int) -> bytes:
    """An id or key typed in full: a prefix is refused, since it could name the wrong device."""
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        value = b""
    if len(value) != size:
        raise UsageError(f"{name} takes {size * 2} hex digits, in full (`caseline agency list` shows them)")
    return value


def server_key_arg(text: str) -> tuple[bytes | None, str | None]:
    """``login --server-key``: the broker key's 30-digit code (``caseline-server key``) or its hex.

    Returns ``(key, None)`` for the 64-digit hex key and ``(None, code)`` for the
    code, which the client checks against the key the broker presents.  The two
    cannot be confused: a code has 30 decimal digits, a key 64 hex digits.
    """
    digits = "".join(ch for ch in text if ch not in " -")
    if len(digits) == 30 and digits.isdigit():
        return None, digits
    if len(digits) == 64:
        return hex_arg(digits, "--server-key", 32), None
    raise UsageError(
        "--server-key takes the broker key's 30-digit code (from `caseline-server key`) or its 64 hex digits"
    )


def parse_instant(text: str, name: str = "--since") -> int:
    """An ISO 8601 instant with its zone stated, as protocol milliseconds."""
    try:
        instant = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not an ISO 8601 time (e.g. 2026-11-20T06:00Z)") from None
    if instant.tzinfo is None:
        raise UsageError(
            f"{name} {text!r} needs a time zone (Z for UTC): a revocation time must not be guessed"
        )
    return int(instant.timestamp() * 1000)


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


def parse_pins(items: Sequence[str]) -> dict[str, str]:
    """``--pin AGENCY=FINGERPRINT``, repeated; a mistyped fingerprint is refused here (exit 2)."""
    from caseline.crypto.keys import normalize_fingerprint  # noqa: PLC0415 - loads the crypto backend

    pins = {}
    for item in items:
        agency, sep, fpr = item.partition("=")
        if not sep or not agency:
            raise UsageError(f"--pin {item!r}: expected AGENCY=FINGERPRINT")
        try:
            pins[agency] = normalize_fingerprint(fpr)
        except UsageError as exc:
            raise UsageError(f"--pin {item!r}: {exc}") from None
    return pins


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


class SuggestingChoice(click.Choice[str]):
    """click's Choice, whose refusal also says which value was most likely meant.

    Matching stays exact: ``red`` for a TLP is refused, not taken as RED, so a
    marking is never guessed; the refusal names RED.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            from caseline.schemas.explain import closest  # noqa: PLC0415 - only when refusing

            values = [str(c) for c in self.choices]
            meant = closest(str(value), values)
            mean = f"did you mean {meant}? " if meant else ""
            self.fail(f"{str(value)!r} is not one of {', '.join(values)}; {mean}".rstrip("; "), param, ctx)


def choice(*values: str) -> click.Choice[str]:
    """A fixed set of values, matched exactly (a person sees the list in --help and in the error)."""
    return SuggestingChoice(values)


KDF = choice("moderate", "interactive")
CASE_ROLE = choice("owner", "member", "observer")
HANDLING = choice("H0", "H1", "H2", "H3")
TLP = choice("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
RESTRICTION = choice("no-evidence", "no-dissemination", "no-third-party", "no-action-without-consent")


def parse_attachment_keys(items: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``--attachment SEQ:INDEX`` values: an update's log position and the file's index in it."""
    keys = []
    for item in items:
        seq, colon, index = item.strip().partition(":")
        if not (colon and seq.isdigit() and index.isdigit() and seq.isascii() and index.isascii()):
            raise UsageError(
                f"--attachment {item!r}: give SEQ:INDEX, e.g. 3:0 for the first file of the update at #3"
            )
        keys.append((int(seq), int(index)))
    return tuple(keys)
