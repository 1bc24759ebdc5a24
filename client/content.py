"""Posting by content type: one helper per form, with the case's markings filled in.

A helper fills in what an officer should not have to type — the language, and
the markings the case's signed policy sets (handling code and TLP), with
default grades where the content type's schema asks for graded markings — and
leaves every other field to the caller.  What the schema still refuses is the
caller's mistake (``InvalidContentError``), found before anything is sealed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from caseline.schemas import content as content_schemas
from caseline.schemas.errors import UnknownError, UsageError
from caseline.schemas.handling import RESTRICTION_CODES, Marked, Markings

if TYPE_CHECKING:
    from caseline.client.attachments import Attachable
    from caseline.client.core import CaseEvent, Ledger
    from caseline.client.uploads import ProgressSink
    from caseline.crypto.caselog import CaseView


@dataclasses.dataclass(frozen=True, slots=True)
class Posted:
    """What a successful post returns: where the update sits and the broker's word on it."""

    case_id: bytes
    update_id: bytes
    seq: int
    receipt_time: int
    retries: int


class ContentHelpers:
    """``Client``'s typed posting helpers (a mixin: ``Client`` supplies ``post``, ``view`` and ``sync``)."""

    if TYPE_CHECKING:

        async def view(self, case_id: bytes) -> CaseView: ...
        def _ledger(self) -> Ledger: ...
        async def sync(self, case_id: bytes) -> list[CaseEvent]: ...
        async def post(
            self,
            case_id: bytes,
            content_type: str,
            content: Mapping[str, Any] | bytes,
            *,
            attachments: Sequence[Attachable] = (),
            progress: ProgressSink | None = None,
            tries: int = 5,
            idempotency_key: str | None = None,
        ) -> Posted: ...

    async def _markings(
        self,
        case_id: bytes,
        graded: bool,
        overrides: Mapping[str, Any] | None,
        *,
        content_type: str = "note",
        fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The case policy's markings joined with what the updates ``fields`` name demand.

        A reply or a quote must carry at least the markings of what it answers
        (PROTOCOL.md §6.7), so an officer who types none gets those; one who
        types lower ones is refused by ``Ledger.check_marking`` when posting.
        """
        view = await self.view(case_id)
        if view.state is None:
            await self.sync(case_id)
        if view.state is None:
            raise UnknownError("this device holds no such case")
        policy = Markings.of({"handling": view.state.policy.handling, "tlp": view.state.policy.tlp})
        item = Marked(b"", "", "", "", content_type, dict(fields or {}), 0)
        book = self._ledger().case_marks(case_id).book
        if any(ref not in book for ref in item.inherits_from()):
            await self.sync(case_id)  # what it answers may have just arrived
            book = self._ledger().case_marks(case_id).book
        base = policy.join(book.floor(item.inherits_from()))
        markings: dict[str, Any] = base.as_content()
        if graded:
            markings |= {"source_reliability": "X", "information_assessment": "4"}
        markings |= dict(overrides or {})
        if markings.get("handling") != "H3":
            markings.pop("restriction_codes", None)
            return markings
        if "restriction_codes" not in markings:
            # Unstated restrictions are read as the strictest (PROTOCOL.md §6.7): say so explicitly.
            markings["restriction_codes"] = sorted(RESTRICTION_CODES)
        if "restrictions" not in markings and item.inherits_from():  # a reply restates what it inherits
            markings["restrictions"] = self._stated_restrictions(case_id, item.inherits_from())
        return markings

    def _stated_restrictions(self, case_id: bytes, refs: list[bytes]) -> str:
        """The H3 text of the nearest update up the reply chain that states one.

        An update marked too low (a violation) states none, though it is held to
        its parent's H3: so the chain is followed up to where the text is.
        """
        book = self._ledger().case_marks(case_id).book
        seen: set[bytes] = set()
        while refs:
            ref = refs.pop(0)
            parent = book.item(ref)
            if parent is None or ref in seen:
                continue
            seen.add(ref)
            stated = parent.content.get("markings", {}).get("restrictions")
            if stated and parent.markings.handling == "H3":
                return str(stated)
            refs += parent.inherits_from()
        return "as the updates it answers state"

    async def post_typed(
        self,
        case_id: bytes,
        content_type: str,
        fields: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        attachments: Sequence[Attachable] = (),
        progress: ProgressSink | None = None,
    ) -> Posted:
        """Post ``fields`` as ``content_type``, filling in ``lang`` and the case's markings when absent.

        ``attachments`` and ``progress`` go to ``post`` as they are (files ride on any content type).
        """
        fields = dict(fields)
        if content_type not in content_schemas.CONTENT_TYPES:
            known = ", ".join(sorted(content_schemas.CONTENT_TYPES))
            raise UsageError(f"{content_type!r} is not a content type: one of {known}")
        graded = content_schemas.graded(content_type)
        markings = fields.pop("markings", None)
        markings = await self._markings(case_id, graded, markings, content_type=content_type, fields=fields)
        body = {"markings": markings, "lang": fields.pop("lang", "en")}
        body |= {k: v for k, v in fields.items() if v is not None}
        return await self.post(
            case_id,
            content_type,
            body,
            idempotency_key=idempotency_key,
            attachments=attachments,
            progress=progress,
        )

    async def post_note(self, case_id: bytes, text: str, **fields: Any) -> Posted:
        return await self.post_typed(case_id, "note", {"text": text, **fields})

    async def post_seizure(
        self,
        case_id: bytes,
        *,
        occurred_at: str,
        place: Mapping[str, Any],
        goods: Sequence[Mapping[str, Any]],
        **fields: Any,
    ) -> Posted:
        return await self.post_typed(
            case_id,
            "seizure",
            {"occurred_at": occurred_at, "place": place, "goods": list(goods), **fields},
        )

    async def post_alert(
        self, case_id: bytes, *, subject_kind: str, subject: Mapping[str, Any], reason: str, **fields: Any
    ) -> Posted:
        return await self.post_typed(
            case_id,
            "alert",
            {"subject_kind": subject_kind, "subject": subject, "reason": reason, **fields},
        )

    async def post_request(
        self, case_id: bytes, *, subject: str, category: str = "other", **fields: Any
    ) -> Posted:
        return await self.post_typed(case_id, "request", {"subject": subject, "category": category, **fields})

    async def post_reply(self, case_id: bytes, *, in_reply_to: bytes, text: str, **fields: Any) -> Posted:
        return await self.post_typed(
            case_id, "reply", {"in_reply_to": in_reply_to.hex(), "text": text, **fields}
        )

    async def post_status(self, case_id: bytes, *, status: str, **fields: Any) -> Posted:
        return await self.post_typed(case_id, "status", {"status": status, **fields})

    async def post_ack(self, case_id: bytes, *, of: bytes, state: str = "received", **fields: Any) -> Posted:
        return await self.post_typed(case_id, "ack", {"of": of.hex(), "state": state, **fields})

    async def release(
        self,
        case_id: bytes,
        of: bytes,
        *,
        purpose: str,
        third_party: str | None = None,
        lifts: Sequence[str] = (),
        recipients: Sequence[str] = (),
        expires: str | None = None,
        to: Mapping[str, str] | None = None,
        note: str | None = None,
    ) -> Posted:
        """Release update ``of`` for ``purpose`` (PROTOCOL.md §6.7): only its author, or a
        supervisor of the author's agency, may; anyone else is refused before anything is sealed.

        ``to`` (a downgrade's lowest markings: ``{"handling": "H1", "tlp": "AMBER"}``),
        ``recipients`` (agency ids) and ``expires`` (RFC 3339) narrow it.
        """
        return await self.post_typed(
            case_id,
            "release",
            {
                "of": of.hex(),
                "purpose": purpose,
                "third_party": third_party,
                "lifts": list(lifts) or None,
                "recipients": list(recipients) or None,
                "expires": expires,
                "to": dict(to) if to else None,
                "note": note,
            },
        )

    async def request_release(
        self,
        case_id: bytes,
        of: bytes,
        *,
        purpose: str,
        reason: str,
        third_party: str | None = None,
        lifts: Sequence[str] = (),
    ) -> Posted:
        """Ask the originator of ``of``, inside the case, to release it for ``purpose``."""
        return await self.post_typed(
            case_id,
            "release-request",
            {
                "of": of.hex(),
                "purpose": purpose,
                "reason": reason,
                "third_party": third_party,
                "lifts": list(lifts) or None,
            },
        )
