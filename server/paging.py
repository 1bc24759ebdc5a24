"""How much one answer about a case log may hold: pages and stream frames bounded by bytes.

A page of 512 entries of 256 KiB each is 128 MiB, far past the 4 MiB a client
accepts in one message (``schemas/codec.py``): a single member posting large
notes made the case unreadable for everyone (issue 14, finding 2).  Pages are
therefore bounded by bytes as well as by count, and the broker refuses at start
a configuration in which the largest entry it can store would not fit a page,
or a page would not fit a client's message.  Sans-I/O: sizes and checks only.
"""

from __future__ import annotations

from typing import Final

from caseline.schemas.api import MAX_RECEIPT
from caseline.schemas.codec import MAX_MESSAGE_BYTES
from caseline.server.core import Limits
from caseline.server.store import ROW_OVERHEAD

#: The ``EntryPage``/``Delivery`` around the entries: tag, case id, count, array header.
PAGE_OVERHEAD: Final = 128
#: A page stays at or below this share of the client's message limit, so that a
#: page (or a frame) that fits the broker's bound always fits what a client reads.
CLIENT_SHARE: Final = 2


def largest_entry(limits: Limits, *, max_frame_bytes: int) -> int:
    """The encoded size of the largest entry the broker can store and serve.

    A body arrives either as an HTTP body (``max_body_bytes``) or inside a
    stream frame (``max_frame_bytes``); the receipt is at most ``MAX_RECEIPT``.
    """
    return max(limits.max_body_bytes, max_frame_bytes) + MAX_RECEIPT + ROW_OVERHEAD


def page_budget(limits: Limits) -> int | None:
    """The bytes of entries (``ROW_OVERHEAD`` each included) a page may hold; None: no byte bound."""
    if limits.page_max_bytes <= 0:
        return None
    return limits.page_max_bytes - PAGE_OVERHEAD


def page_count(ordered: int, *, after: int, got: int, limit: int) -> int:
    """The log length a page states: clients page on while they hold fewer entries than it.

    A page may hold fewer entries than asked (bounded by bytes), so clients do
    not take a short page as the end; they refuse an *empty* page below the
    stated count (a broker withholding entries).  The core's count includes
    entries ordered but not yet durable, which no read can return yet: an
    empty page therefore states the cursor, not a count it cannot serve.  A
    cursor past the ordered log still gets the shorter count (a rollback, for
    the client to see).
    """
    if got == 0 and limit > 0:
        return min(ordered, after)
    return ordered


def check_paging(limits: Limits, *, max_frame_bytes: int) -> None:
    """Refuse a configuration under which some entry would not fit a page, a frame or a client.

    Any single entry must fit one page (a page always holds at least one entry,
    so an oversized one would be served past the bound), one stream buffer (or
    every connection following it would be cut), and the client's message
    limit with room to spare.
    """
    biggest = largest_entry(limits, max_frame_bytes=max_frame_bytes) + PAGE_OVERHEAD
    ceiling = MAX_MESSAGE_BYTES // CLIENT_SHARE
    if biggest > ceiling:
        raise ValueError(
            f"the largest entry ({biggest} bytes with its receipt and framing, from max_body_bytes"
            f" and max_frame_bytes) would not fit a client's message of {MAX_MESSAGE_BYTES} bytes"
            f" with room to spare (at most {ceiling})"
        )
    page = limits.page_max_bytes
    if page > 0 and not biggest <= page <= ceiling:
        raise ValueError(
            f"page_max_bytes must lie between {biggest} (the largest entry with its receipt and"
            f" framing) and {ceiling} (half a client's message limit), or be 0; it is {page}"
        )
    buffer = limits.stream_buffer_bytes
    if 0 < buffer < biggest:
        raise ValueError(
            f"stream_buffer_bytes must be at least {biggest} (the largest entry with its receipt and"
            f" framing), or 0; it is {buffer}"
        )
    if limits.case_max_bytes < 0:
        raise ValueError("case_max_bytes must be a byte count, or 0 for no limit")
