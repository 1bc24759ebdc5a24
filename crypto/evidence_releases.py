"""The evidence verifier's release step (PROTOCOL.md §8, step 9).

A bundle proves what was said; the markings signed into it say whether the
exporter was allowed to put it before a court.  So the offline verifier asks
the same rule book the members' clients ask (schemas/handling.py), over the
updates the bundle discloses, in log order: an update the exporter's agency
may not disclose as evidence at the bundle's time fails the bundle, naming
the release it lacks.  Only disclosed releases count, and only those by the
released update's author or a supervisor of its agency: the book drops the
others (``release-forbidden``), so a modified client can neither leave a
release out nor forge one in.

The verifier sees only what is disclosed, so it can never be stricter than the
exporter's client that saw the whole case: a reply whose parent is not
disclosed is held to its own markings, and the exporter discloses, with each
update, the releases it relies on and the downgrades of the updates it
answers (client/evidence_select.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from caseline.crypto.updates import OpenedUpdate
from caseline.schemas import content as content_schemas
from caseline.schemas.errors import NotAllowedError
from caseline.schemas.handling import HandlingBook, Marked, Permission
from caseline.schemas.wire import DeviceCert


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseUsed:
    """A disclosed release that let the exporter's agency disclose a disclosed update."""

    seq: int  # the released update's log position
    update_id: bytes
    release_seq: int
    release_id: bytes
    purpose: str
    releaser: DeviceCert


def check_releases(
    disclosed: Iterable[tuple[int, OpenedUpdate, DeviceCert]], *, agency_id: str, at: int
) -> tuple[ReleaseUsed, ...]:
    """The releases the disclosed updates rely on; ``NotAllowedError`` for one that has none.

    ``disclosed`` are (seq, opened update, author's certificate); ``agency_id``
    is the exporter's agency and ``at`` the bundle's time (ms).
    """
    book = HandlingBook()
    where: dict[bytes, tuple[int, DeviceCert]] = {}
    for seq, opened, author in sorted(disclosed, key=lambda d: d[0]):
        item = _marked(opened, author)
        if item is None or item.update_id in book:
            continue
        book.add(item)
        where[item.update_id] = (seq, author)
    used: list[ReleaseUsed] = []
    for update_id, (seq, author) in where.items():
        answer = may_disclose(book, update_id, agency_id=agency_id, at=at, disclosed=where)
        if not answer.allowed:
            raise NotAllowedError(
                f"disclosed update #{seq} ({update_id.hex()[:16]}) by {author.agency_id}:{author.user_id}"
                f" may not be evidence disclosed by {agency_id}: {answer.reason}"
            )
        releases = {r.release_id: r for r in book.releases(update_id)}
        for release_id in answer.releases:
            release_seq, releaser = where[release_id]
            used.append(
                ReleaseUsed(seq, update_id, release_seq, release_id, releases[release_id].purpose, releaser)
            )
    return tuple(used)


def may_disclose(
    book: HandlingBook, update_id: bytes, *, agency_id: str, at: int, disclosed: Collection[bytes]
) -> Permission:
    """``may_export``, except that a release that counts goes with the update it releases.

    A court must see the permission an exhibit relies on, and a release says
    nothing but that about an update the bundle discloses already; so
    whatever its own markings (an H2 case marks it H2 by default), a counting
    release of a disclosed update is disclosed with it.
    """
    item = book.item(update_id)
    if item is not None and item.content_type == "release":
        of = bytes.fromhex(str(item.content["of"]))
        if of in disclosed and any(r.release_id == update_id for r in book.releases(of)):
            return Permission(True)
    return book.may_export(update_id, agency_id=agency_id, at=at)


def _marked(opened: OpenedUpdate, author: DeviceCert) -> Marked | None:
    """An opened update as the rules see it (None for what carries no content of its own)."""
    record = opened.record
    if record.content_type not in content_schemas.CONTENT_TYPES:
        return None  # a history share: it hands over keys, not content
    return Marked(
        update_id=opened.update_id,
        agency_id=author.agency_id,
        user_id=author.user_id,
        device_role=author.role,
        content_type=record.content_type,
        content=content_schemas.decode_json(record.content),
        time=record.time,
    )
