"""The marking rule book (schemas/handling.py) fed from a case's verified events.

The rules judge signed updates, which the client holds as ``CaseEvent``s; this
is the one place that turns the one into the other, so the receiving view, the
sending checks and the evidence export all judge the same updates the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from caseline.client.core import CaseEvent
from caseline.schemas.handling import HandlingBook, Marked


def marked(event: CaseEvent) -> Marked | None:
    """The event as the rules see it, or None for what carries no markings of its own."""
    if event.kind != "update" or not event.readable or event.content is None or event.update_id is None:
        return None
    if event.author is None or event.content_type is None:
        return None
    return Marked(
        update_id=event.update_id,
        agency_id=event.author.agency_id,
        user_id=event.author.user_id,
        device_role=event.author.device_role,
        content_type=event.content_type,
        content=event.content,
        time=event.time,
    )


def book_of(events: Iterable[CaseEvent]) -> HandlingBook:
    """A case's rule book, from its events in log order (shared ones where they were shared)."""
    book = HandlingBook()
    for event in sorted(events, key=lambda e: e.seq):
        item = marked(event)
        if item is not None and item.update_id not in book:
            book.add(item)
    return book
