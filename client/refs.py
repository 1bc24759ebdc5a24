"""How a person names an update: a short id on screen, a prefix or ``#seq`` typed back.

Update ids are 64 hex digits, too long to read or type, so the human views
show the first eight and the CLI takes back any unique prefix of at least
four, the full id, or the update's position in the case (``#12``).  A
reference is resolved only against updates this device has verified in the
case, so a typo or an id from another case is refused before anything is
sent.  Sans-I/O: the caller hands in the ids it holds.

A prefix is matched against every id the views have shown, voided updates
included, and refused if it matches one of those: an update the person saw
may turn voided when its sender's revocation is learnt just before they
answer it, and a prefix must then not quietly name another update that
shares it (a member can grind an id to share a short prefix).  The same for
``#SEQ`` naming a voided or purged entry.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Final

from caseline.schemas.errors import UsageError

#: Hex digits shown for an update on screen; unique in all but very large cases.
SHORT: Final = 8
#: The shortest prefix taken back: fewer digits would match too much by chance.
MIN_PREFIX: Final = 4
FULL: Final = 64
#: Why a voided or purged entry cannot be named, by what became of it.
_GONE: Final = {
    "voided": "voided (its sender's device had been revoked when it was sent), so it cannot be answered",
    "purged": "removed by the case's retention policy, so it cannot be answered",
}


def short_id(update_id: bytes) -> str:
    """The id as the human views show it (the first 8 hex digits)."""
    return update_id.hex()[:SHORT]


def resolve_update(
    ref: str,
    known: Iterable[bytes],
    *,
    by_seq: Mapping[int, bytes] | None = None,
    withdrawn: Iterable[bytes] = (),
    gone: Mapping[int, str] | None = None,
    case: str = "this case",
) -> bytes:
    """The one update of ``known`` that ``ref`` names, or a ``UsageError`` that says why not.

    ``ref`` is a full id, a unique hex prefix of at least ``MIN_PREFIX``
    digits, or ``#SEQ`` when ``by_seq`` maps positions to update ids.
    ``withdrawn`` are the ids of voided updates, and ``gone`` says which
    positions hold a voided or purged entry ("voided", "purged"): a reference
    that names one of them, alone or among others, is refused.
    """
    text = ref.strip().lower()
    if text.startswith("#"):
        found = None
        if text[1:].isdigit() and gone is not None and int(text[1:]) in gone:
            raise UsageError(f"update {ref} in case {case} was {_GONE.get(gone[int(text[1:])], 'withdrawn')}")
        if text[1:].isdigit() and by_seq is not None:
            found = by_seq.get(int(text[1:]))
        if found is None:
            raise UsageError(f"no update {ref} in case {case} (`caseline case show` lists them)")
        return found
    if len(text) < MIN_PREFIX or len(text) > FULL or not set(text) <= set(string.hexdigits.lower()):
        raise UsageError(
            f"{ref!r} is not an update id: give at least {MIN_PREFIX} of its hex digits, or #SEQ"
            " (`caseline case show` lists them)"
        )
    voided = {u for u in withdrawn if u.hex().startswith(text)}
    matches = sorted(voided | {u for u in known if u.hex().startswith(text)})
    if not matches:
        raise UsageError(f"no update {ref} in case {case} (`caseline case show` lists them)")
    if voided and len(matches) == 1:
        raise UsageError(f"update {short_id(matches[0])} in case {case} was {_GONE['voided']}")
    if len(matches) > 1:
        shown = ", ".join(u.hex()[: max(len(text) + 4, SHORT)] for u in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise UsageError(f"{ref} names more than one update: {shown}{more}; give more digits")
    return matches[0]
