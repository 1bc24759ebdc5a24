"""Where each request for assistance stands: the pure fold behind ``caseline due`` and ``stats``.

A case's verified events, in log order, become one ``RequestRow`` per
``request`` update (PROTOCOL.md §6.8).  No I/O and no clock: the trusted time
of each entry (the broker's receipt time, or the witnessed time once a quorum
checkpoint covers it) is handed in by the caller, because the sender's own
``time`` is its clock and could be set back to make an answer look prompt.

Only what the request asks counts: an ack or reply from an agency the request
did not name (``to``, else every other agency in the roster at the request)
changes nothing, so neither a third agency nor the requester can close or
extend it.  A deadline only ever moves later.  The fold is idempotent (an
update folded twice counts once), so replaying a case, or a history share
delivering an update again, cannot count an extension twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Final, NewType

from caseline.client.core import CaseEvent
from caseline.schemas.codec import pack, unpack
from caseline.schemas.content import answer_deadline_seconds, request_category
from caseline.schemas.errors import CaselineError
from caseline.schemas.handling import format_time, parse_time

CaseId = NewType("CaseId", bytes)
RequestId = NewType("RequestId", bytes)

OPEN: Final = "open"
ANSWERED: Final = "answered"
REFUSED: Final = "refused"
EXTENDED: Final = "extended"
#: What a pre-protocol-4 ack ``level`` means as a state.
LEGACY_LEVELS: Final = {"received": "received", "accepted": "in-progress", "actioned": "in-progress"}
#: A reply's ``outcome`` that closes the request it answers.
CLOSING_OUTCOMES: Final = {"answered": ANSWERED, "refused": REFUSED}


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRow:
    """One request and where it stands.  Times are ms since the epoch (UTC).

    ``start`` is the trusted time the clock starts from; ``deadline`` is the
    Article 5 deadline from it (calendar days: ``start + N × 86,400 s``),
    moved later by extensions; ``wished`` is the requester's own earlier date,
    for display only.  ``first_ack_at``, ``answered_at`` and ``refused_at``
    are the trusted times of those acks (what ``stats`` measures).
    """

    case_id: CaseId
    request_id: RequestId
    seq: int
    from_agency: str
    from_user: str
    to_agencies: tuple[str, ...]
    category: str
    #: Plaintext: shown to the officer, kept sealed at rest like every event.
    subject: str
    start: int
    deadline: int
    wished: int | None = None
    state: str = OPEN
    first_ack_at: int | None = None
    answered_at: int | None = None
    refused_at: int | None = None
    answer_id: bytes | None = None
    #: The asked agency that answered or refused.
    closed_by: str | None = None
    extensions: int = 0
    extension_reason: str | None = None
    ground: str | None = None
    #: The request's own markings: what anything naming it (an ack, a reminder) must carry at least.
    handling: str | None = None
    tlp: str | None = None
    restriction_codes: tuple[str, ...] = ()

    @property
    def closed(self) -> bool:
        return self.state in (ANSWERED, REFUSED)

    def overdue(self, now: int) -> bool:
        """Still owed and past its deadline."""
        return not self.closed and now > self.deadline

    @property
    def on_time(self) -> bool | None:
        """For an answered request: whether the answer came by the deadline in force."""
        return None if self.answered_at is None else self.answered_at <= self.deadline

    def asks(self, agency_id: str) -> bool:
        return agency_id in self.to_agencies


@dataclasses.dataclass(slots=True)
class _Track:
    row: RequestRow
    #: Updates already folded into the row: folding one again changes nothing.
    applied: set[bytes] = dataclasses.field(default_factory=set)


def _hex_id(value: Any) -> bytes | None:
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None
    return None


def _time(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except (ValueError, IndexError):
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Signed:
    """What the fold reads of a readable update: who signed it, its id, its content."""

    update_id: bytes
    agency_id: str
    user_id: str
    content: Mapping[str, Any]


def _live(event: CaseEvent) -> _Signed | None:
    """A readable, signed update that no reader found breaking the marking rules."""
    if event.kind != "update" or not event.readable or getattr(event, "violation", None) is not None:
        return None
    if event.content is None or event.update_id is None or event.author is None:
        return None
    return _Signed(event.update_id, event.author.agency_id, event.author.user_id, event.content)


def _markings(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    codes = value.get("restriction_codes")
    return {
        "handling": value.get("handling") if isinstance(value.get("handling"), str) else None,
        "tlp": value.get("tlp") if isinstance(value.get("tlp"), str) else None,
        "restriction_codes": tuple(sorted(c for c in codes if isinstance(c, str)))
        if isinstance(codes, list)
        else (),
    }


class Workflow:
    """The fold over one case's events; ``state()``/``restore()`` keep it between runs."""

    def __init__(self, case_id: bytes) -> None:
        self.case_id = CaseId(case_id)
        self.roster: tuple[str, ...] = ()
        self._tracks: dict[bytes, _Track] = {}

    def rows(self) -> list[RequestRow]:
        return sorted((t.row for t in self._tracks.values()), key=lambda r: r.seq)

    def add(self, event: CaseEvent, at: int | None = None) -> RequestRow | None:
        """Fold one event; ``at`` is its trusted time (defaults to the sender's, for tests).

        Returns the row it created or changed, if any.
        """
        if event.kind == "commit" and event.members:
            self.roster = tuple(sorted({m.author.agency_id for m in event.members if not m.voided}))
            return None
        signed = _live(event)
        if signed is None:
            return None
        when = event.time if at is None else at
        if event.content_type == "request":
            return self._request(event.seq, signed, when)
        if event.content_type == "ack":
            return self._ack(signed, when)
        if event.content_type == "reply":
            return self._reply(signed, when)
        return None

    def _request(self, seq: int, event: _Signed, at: int) -> RequestRow | None:
        if event.update_id in self._tracks:
            return None
        content = event.content
        sender = event.agency_id
        asked = content.get("to")
        if isinstance(asked, list) and asked:
            to = tuple(sorted({a for a in asked if isinstance(a, str) and a != sender}))
        else:
            to = tuple(a for a in self.roster if a != sender)
        category = request_category(content)
        row = RequestRow(
            case_id=self.case_id,
            request_id=RequestId(event.update_id),
            seq=seq,
            from_agency=sender,
            from_user=event.user_id,
            to_agencies=to,
            category=category,
            subject=str(content.get("subject", "")),
            start=at,
            deadline=at + answer_deadline_seconds(category) * 1000,
            wished=_time(content.get("deadline")),
            **_markings(content.get("markings")),
        )
        self._tracks[event.update_id] = _Track(row)
        return row

    def _target(self, event: _Signed, ref: Any) -> _Track | None:
        """The open request ``ref`` names, if this event's agency is one it asks and it is new here."""
        of = _hex_id(ref)
        track = None if of is None else self._tracks.get(of)
        if track is None or event.update_id in track.applied:
            return None
        if not track.row.asks(event.agency_id) or track.row.closed:
            return None
        track.applied.add(event.update_id)
        return track

    def _ack(self, event: _Signed, at: int) -> RequestRow | None:
        content = event.content
        track = self._target(event, content.get("of"))
        if track is None:
            return None
        state = content.get("state")
        if not isinstance(state, str):
            state = LEGACY_LEVELS.get(str(content.get("level")), "received")
        row = track.row
        change: dict[str, Any] = {}
        if row.first_ack_at is None:
            change["first_ack_at"] = at
        if state == ANSWERED:
            change |= {"state": ANSWERED, "answered_at": at, "answer_id": _hex_id(content.get("answer"))}
            change["closed_by"] = event.agency_id
        elif state == REFUSED:
            change |= {"state": REFUSED, "refused_at": at, "ground": content.get("ground")}
            change["closed_by"] = event.agency_id
        elif state == EXTENDED:
            new = _time(content.get("deadline"))
            if new is None or new <= row.deadline:
                return self._change(track, change)  # an "extension" earlier than now moves nothing
            change |= {
                "state": EXTENDED,
                "deadline": new,
                "extensions": row.extensions + 1,
                "extension_reason": content.get("extension_reason"),
            }
        elif state in ("received", "in-progress"):
            change["state"] = state
        return self._change(track, change)

    def _reply(self, event: _Signed, at: int) -> RequestRow | None:
        content = event.content
        outcome = CLOSING_OUTCOMES.get(str(content.get("outcome")))
        if outcome is None:
            return None
        track = self._target(event, content.get("in_reply_to"))
        if track is None:
            return None
        change: dict[str, Any] = {"state": outcome, "closed_by": event.agency_id}
        if track.row.first_ack_at is None:
            change["first_ack_at"] = at
        if outcome == ANSWERED:
            change |= {"answered_at": at, "answer_id": event.update_id}
        else:
            change["refused_at"] = at
        return self._change(track, change)

    @staticmethod
    def _change(track: _Track, change: dict[str, Any]) -> RequestRow:
        if change:
            track.row = dataclasses.replace(track.row, **change)
        return track.row

    # ------------------------------------------------------------ keeping it between runs
    def state(self) -> list[object]:
        """A plain tree (for msgpack): the roster, the open rows, then the closed rows and what
        each row folded, each packed apart as bytes.

        So reading only the open rows (``rows_of(open_only=True)``, what ``due``
        does over every case) decodes nothing else: its cost follows what is owed,
        not how many requests a case ever had.
        """
        tracks = list(self._tracks.values())
        open_ = [t for t in tracks if not t.row.closed]
        closed = [t for t in tracks if t.row.closed]
        return [
            list(self.roster),
            [_row_fields(t.row) for t in open_],
            pack([_row_fields(t.row) for t in closed]),
            pack([sorted(t.applied) for t in open_ + closed]),
        ]

    @classmethod
    def restore(cls, case_id: bytes, state: Any) -> Workflow:
        """The fold ``state()`` described; raises ``ValueError`` on anything else."""
        flow = cls(case_id)
        try:
            roster, _, _, applied = state
            flow.roster = tuple(roster)
            for row, done in zip(rows_of(case_id, state), unpack(applied), strict=True):
                flow._tracks[row.request_id] = _Track(row, set(done))
        except (TypeError, ValueError, CaselineError) as exc:
            raise ValueError(f"not a stored request index: {exc}") from None
        return flow


def rows_of(case_id: bytes, state: Any, *, open_only: bool = False) -> list[RequestRow]:
    """The rows of a stored ``Workflow.state()``, open ones first (a row stored by older code,
    with fewer fields, loads).  ``open_only``: only requests still owed; the closed are not decoded.
    """
    try:
        fields = state[1] if open_only else [*state[1], *unpack(state[2])]
        return [RequestRow(*_row_values(case_id, f)) for f in fields]
    except (TypeError, IndexError, KeyError, CaselineError) as exc:
        raise ValueError(f"not a stored request index: {exc}") from None


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(RequestRow))


def _row_fields(row: RequestRow) -> list[object]:
    out: list[object] = []
    for name in _FIELDS[1:]:  # the case id is the key it is stored under
        value = getattr(row, name)
        out.append(list(value) if isinstance(value, tuple) else value)
    return out


_TUPLES: Final = tuple(i for i, f in enumerate(dataclasses.fields(RequestRow)) if "tuple" in str(f.type))


def _row_values(case_id: bytes, fields: list[Any]) -> list[Any]:
    values: list[Any] = [CaseId(case_id), *fields]
    for i in _TUPLES:
        if i < len(values):
            values[i] = tuple(values[i])
    return values


def witnessed_start(row: RequestRow, final: int, witnessed_at: int | None) -> RequestRow:
    """The row with its clock started no later than a witness quorum saw the request.

    The receipt time is the broker's word: a broker could post-date it to give
    the asked agency more time.  Once a quorum checkpoint covers the request
    (``seq < final``) its witnessed time is a bound every witness signed, so
    the start is the earlier of the two; an unextended deadline moves with it.
    """
    if witnessed_at is None or row.seq >= final or witnessed_at >= row.start:
        return row
    moved = row.start - witnessed_at
    deadline = row.deadline if row.extensions else row.deadline - moved
    return dataclasses.replace(row, start=witnessed_at, deadline=deadline)


@dataclasses.dataclass(frozen=True, slots=True)
class Due:
    """What one agency owes and is owed at ``now``: open requests, soonest deadline first."""

    now: int
    agency_id: str
    #: Open requests that ask this agency.  (Not in the repr: asyncio reprs a task's result,
    #: and 100,000 rows cost a second to print nobody reads.)
    owe: tuple[RequestRow, ...] = dataclasses.field(repr=False)
    #: Open requests this agency sent.
    owed: tuple[RequestRow, ...] = dataclasses.field(repr=False)


def rfc3339_ms(ms: int | None) -> str | None:
    """UTC, with milliseconds: what ``--json`` gives bots (``2026-12-01T09:00:00.000Z``)."""
    return None if ms is None else f"{format_time(ms)[:-1]}.{ms % 1000:03d}Z"


def row_json(row: RequestRow, now: int) -> dict[str, Any]:
    """A row for scripts and bots: stable keys, ids in hex, times RFC 3339 UTC with ms."""
    return {
        "case_id": row.case_id.hex(),
        "request_id": row.request_id.hex(),
        "seq": row.seq,
        "from": row.from_agency,
        "from_user": row.from_user,
        "to": list(row.to_agencies),
        "category": row.category,
        "subject": row.subject,
        "start": rfc3339_ms(row.start),
        "deadline": rfc3339_ms(row.deadline),
        "wished": rfc3339_ms(row.wished),
        "state": row.state,
        "overdue": row.overdue(now),
        "first_ack_at": rfc3339_ms(row.first_ack_at),
        "answered_at": rfc3339_ms(row.answered_at),
        "refused_at": rfc3339_ms(row.refused_at),
        "answer_id": None if row.answer_id is None else row.answer_id.hex(),
        "closed_by": row.closed_by,
        "extensions": row.extensions,
        "extension_reason": row.extension_reason,
        "ground": row.ground,
        "handling": row.handling,
        "tlp": row.tlp,
        "restriction_codes": list(row.restriction_codes),
    }


def due_of(rows: Iterable[RequestRow], *, agency_id: str, now: int) -> Due:
    open_rows = sorted((r for r in rows if not r.closed), key=lambda r: (r.deadline, r.case_id, r.seq))
    return Due(
        now=now,
        agency_id=agency_id,
        owe=tuple(r for r in open_rows if r.asks(agency_id)),
        owed=tuple(r for r in open_rows if r.from_agency == agency_id),
    )


def fold(
    case_id: bytes, events: Iterable[CaseEvent], times: Mapping[int, int] | None = None
) -> list[RequestRow]:
    """Every request of a case, from its events in log order; ``times`` maps seq to trusted time."""
    flow = Workflow(case_id)
    for event in sorted(events, key=lambda e: e.seq):
        flow.add(event, None if times is None else times.get(event.seq))
    return flow.rows()
