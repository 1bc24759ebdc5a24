"""The marking rule book (schemas/handling.py) fed from a case's verified events.

The rules judge signed updates, which the client holds as ``CaseEvent``s; this
is the one place that turns the one into the other, so the receiving view, the
sending checks and the evidence export all judge the same updates the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from caseline.client.core import CaseEvent, marked_event
from caseline.schemas.handling import HandlingBook, Marked


def marked(event: CaseEvent) -> Marked | None:
    """The event as the rules see it, or None for what carries no markings of its own.

    Dated as the receiving clients judge it (``CaseEvent.judged_at``: the later
    of its own time and the broker's receipt), so every judge agrees.
    """
    return marked_event(event)


def book_of(events: Iterable[CaseEvent]) -> HandlingBook:
    """A case's rule book, from its events in log order (shared ones where they were shared)."""
    book = HandlingBook()
    for event in sorted(events, key=lambda e: e.seq):
        item = marked(event)
        if item is not None and item.update_id not in book:
            book.add(item)
    return book
