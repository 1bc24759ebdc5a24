"""Marking test helpers: markings used across tests, and a modified client (PROTOCOL.md §6.7)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from caseline.client.client import Client
from caseline.client.core_marks import Withheld

H3_RED: dict[str, Any] = {
    "handling": "H3",
    "tlp": "RED",
    "restrictions": "for the Namanga operation only",
    "restriction_codes": ["no-dissemination", "no-evidence"],
}
CLEAR: dict[str, Any] = {"handling": "H0", "tlp": "CLEAR"}


def modified(client: Client) -> Client:
    """Switch off this one client's sender checks: it seals what its own rule book would refuse."""
    ledger = client._ledger()

    def skip_check(case_id: bytes, *, content_type: str, content: bytes, now: int) -> None:
        return None

    ledger.check_marking = skip_check  # type: ignore[method-assign]
    original = ledger.case_marks

    def marks(case_id: bytes) -> Any:
        found = original(case_id)

        def share_all(
            seqs: Iterable[int], *, agency_ids: Collection[str], at: int
        ) -> tuple[list[int], list[Withheld]]:
            return list(seqs), []

        found.shareable = share_all  # type: ignore[method-assign]
        return found

    ledger.case_marks = marks  # type: ignore[method-assign]
    return client
