"""Handling codes and TLP as rules every reader enforces (PROTOCOL.md §6.7).

The broker cannot read content, so it cannot enforce a marking; every member's
client does, the same way, from the signed updates alone.  This module is that
rule book: pure, fed the readable updates of one case in log order, it says
which update breaks a rule (a *marking violation*: signed, so attributable to
its author) and whether an update may be exported as evidence or shared with a
member added later.  The sending client asks the same questions before it
seals, the receiving clients after they open, and the offline evidence
verifier over what a bundle discloses, so the three can never disagree.

The codes are SIENA's: H0 use for law-enforcement purposes; H1 not as
evidence in court without the provider's permission; H2 not to be
disseminated without it; H3 other restrictions, stated in text and in
machine-readable ``restriction_codes``.  Permission is a ``release`` update
from the provider: the author, or a ``supervisor`` device of the author's
agency.  The provider's own agency is never restricted by its own markings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from typing import Any, Final

from caseline.schemas.references import referenced_updates

HANDLING_RANK: Final = {"H0": 0, "H1": 1, "H2": 2, "H3": 3}
TLP_RANK: Final = {"CLEAR": 0, "GREEN": 1, "AMBER": 2, "AMBER+STRICT": 3, "RED": 4}
NO_EVIDENCE: Final = "no-evidence"
NO_DISSEMINATION: Final = "no-dissemination"
NO_THIRD_PARTY: Final = "no-third-party"
NO_ACTION: Final = "no-action-without-consent"  # shown to every reader; no act of the software breaks it
RESTRICTION_CODES: Final = frozenset({NO_EVIDENCE, NO_DISSEMINATION, NO_THIRD_PARTY, NO_ACTION})

EVIDENCE: Final = "evidence"
DISSEMINATE: Final = "disseminate"
THIRD_PARTY: Final = "third-party"
DOWNGRADE: Final = "downgrade"
#: The H3 codes a release lifts when it does not list them itself.
PURPOSE_LIFTS: Final = {
    EVIDENCE: frozenset({NO_EVIDENCE}),
    DISSEMINATE: frozenset({NO_DISSEMINATION, NO_THIRD_PARTY}),
    THIRD_PARTY: frozenset({NO_DISSEMINATION, NO_THIRD_PARTY}),
    DOWNGRADE: frozenset(),
}
#: The device role whose holder may release any update of its own agency.
SUPERVISOR: Final = "supervisor"
#: Content types whose ``of`` names the update they are about, not content they carry on:
#: a release must be readable under lower markings than what it releases.
NOT_INHERITING: Final = frozenset({"release", "release-request"})

#: Why an update is a marking violation (``Violation.rule``).
V_DOWNGRADE: Final = "downgrade"  # marked below an update it answers or quotes, with no release
V_RELEASE_FORBIDDEN: Final = "release-forbidden"  # a release by someone who may not release
V_SHARED_RED: Final = "shared-red"  # a history share handing TLP:RED to a member added later
V_SHARED_RESTRICTED: Final = "shared-restricted"  # H2 (or H3 no-dissemination) shared unreleased


@dataclasses.dataclass(frozen=True, slots=True)
class Markings:
    """One update's markings as the rules compare them.

    An H3 marking without codes (written before protocol 4) counts as carrying
    every code: an unknown restriction is read as the strictest one.
    """

    handling: str
    tlp: str
    codes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, markings: Mapping[str, Any]) -> Markings:
        handling, tlp = str(markings.get("handling", "H0")), str(markings.get("tlp", "CLEAR"))
        codes = frozenset(markings.get("restriction_codes") or ()) if handling == "H3" else frozenset()
        if handling == "H3" and not codes:
            codes = RESTRICTION_CODES
        return cls(handling, tlp, codes & RESTRICTION_CODES)

    def covers(self, other: Markings) -> bool:
        """Whether these markings are at least as restrictive as ``other``'s."""
        if HANDLING_RANK[self.handling] < HANDLING_RANK[other.handling]:
            return False
        if TLP_RANK[self.tlp] < TLP_RANK[other.tlp]:
            return False
        return other.handling != "H3" or self.codes >= other.codes

    def join(self, other: Markings) -> Markings:
        """The least markings that cover both."""
        handling = max(self.handling, other.handling, key=HANDLING_RANK.__getitem__)
        tlp = max(self.tlp, other.tlp, key=TLP_RANK.__getitem__)
        codes = (self.codes | other.codes) if handling == "H3" else frozenset()
        return Markings(handling, tlp, codes)

    @property
    def label(self) -> str:
        codes = f" ({', '.join(sorted(self.codes))})" if self.handling == "H3" else ""
        return f"{self.handling}/TLP:{self.tlp}{codes}"

    def as_content(self) -> dict[str, Any]:
        """The ``markings`` fields that state these markings (H3's free text is the caller's)."""
        out: dict[str, Any] = {"handling": self.handling, "tlp": self.tlp}
        if self.handling == "H3":
            out["restriction_codes"] = sorted(self.codes)
        return out


BOTTOM: Final = Markings("H0", "CLEAR")


@dataclasses.dataclass(frozen=True, slots=True)
class Marked:
    """One readable update, as the rules see it.

    ``time`` is when the rules judge it (ms): the later of its record's time
    and the broker's receipt, so a sender cannot date itself before a
    release's expiry without the broker's help.
    """

    update_id: bytes
    agency_id: str
    user_id: str
    device_role: str
    content_type: str
    content: Mapping[str, Any]
    time: int

    @property
    def markings(self) -> Markings:
        markings = self.content.get("markings")
        return Markings.of(markings) if isinstance(markings, Mapping) else BOTTOM

    def inherits_from(self) -> list[bytes]:
        """The updates whose markings this one must carry at least (§6.7)."""
        out = []
        for field, text in referenced_updates(self.content_type, self.content):
            if self.content_type in NOT_INHERITING and field == "of":
                continue
            try:
                out.append(bytes.fromhex(text))
            except ValueError:
                continue
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """A release that counts: posted by someone who may release the update it names."""

    release_id: bytes
    of: bytes
    purpose: str
    lifts: frozenset[str]
    third_party: str | None = None
    to: Markings | None = None
    recipients: frozenset[str] | None = None
    expires: int | None = None

    @classmethod
    def of_content(cls, release_id: bytes, content: Mapping[str, Any]) -> Release:
        purpose = str(content["purpose"])
        lifts = content.get("lifts")
        to = content.get("to")
        recipients = content.get("recipients")
        expires = content.get("expires")
        return cls(
            release_id=release_id,
            of=bytes.fromhex(str(content["of"])),
            purpose=purpose,
            lifts=frozenset(lifts) if lifts else PURPOSE_LIFTS[purpose],
            third_party=content.get("third_party"),
            to=Markings.of(to) if isinstance(to, Mapping) else None,
            recipients=frozenset(recipients) if recipients else None,
            expires=None if expires is None else parse_time(str(expires)),
        )

    def serves(self, purposes: Collection[str], *, agency_id: str, at: int, code: str | None = None) -> bool:
        """Whether it permits one of ``purposes`` to ``agency_id`` at ``at`` (lifting ``code``)."""
        if self.purpose not in purposes:
            return False
        if self.expires is not None and at >= self.expires:
            return False
        if self.purpose == THIRD_PARTY and self.third_party != agency_id:
            return False
        if self.recipients is not None and agency_id not in self.recipients:
            return False
        return code is None or code in self.lifts


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """An update that breaks a marking rule: its author signed it, so it is attributable."""

    rule: str
    update_id: bytes
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Permission:
    """The answer to "may this update go there?": yes with the releases relied on, or why not."""

    allowed: bool
    reason: str = ""
    releases: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class _Need:
    """One condition an act needs a release for: one of ``purposes``, lifting ``code`` if set."""

    purposes: frozenset[str]
    code: str | None
    why: str


def parse_time(text: str) -> int:
    """An RFC 3339 date-time (as the schemas' ``datetime`` admits) in ms since the epoch.

    Computed by hand (the civil-calendar day count) because a core module
    imports nothing that can read the clock.
    """
    date, time = text[:10], text[11:]
    year, month, day = int(date[:4]), int(date[5:7]), int(date[8:10])
    hour, minute, second = int(time[:2]), int(time[3:5]), int(time[6:8])
    rest = time[8:]
    millis = 0
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
        millis = int((rest[1 : 1 + digits] + "00")[:3])
        rest = rest[1 + digits :]
    offset = 0
    if rest[:1] in ("+", "-"):
        offset = (int(rest[1:3]) * 60 + int(rest[4:6])) * (1 if rest[0] == "+" else -1)
    seconds = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second) - offset * 60
    return seconds * 1000 + millis


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as the RFC 3339 UTC text the schemas use (whole seconds)."""
    days, seconds = divmod(ms // 1000, 86400)
    year, month, day = _civil_from_days(days)
    hour, minute, second = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


class HandlingBook:
    """The marking state of one case: each readable update's markings, and the releases that count.

    Feed it every readable update in log order with ``add``.  An update that
    breaks a rule is still remembered, under the markings it should have
    carried, so that a reply to it inherits what it leaked.
    """

    def __init__(self) -> None:
        self._items: MutableMapping[bytes, Marked] = {}
        self._effective: MutableMapping[bytes, Markings] = {}
        self._releases: dict[bytes, list[Release]] = {}

    @classmethod
    def restored(
        cls,
        items: MutableMapping[bytes, Marked],
        effective: MutableMapping[bytes, Markings],
        releases: dict[bytes, list[Release]],
    ) -> HandlingBook:
        """A book whose state was kept (client/core_marks.py), not judged again.

        The mappings may fill themselves on first use: a 100,000-update case
        then costs only the updates a command asks about.
        """
        book = cls()
        book._items, book._effective, book._releases = items, effective, releases
        return book

    def __contains__(self, update_id: object) -> bool:
        return update_id in self._items

    def item(self, update_id: bytes) -> Marked | None:
        return self._items.get(update_id)

    def markings(self, update_id: bytes) -> Markings | None:
        """The markings the rules hold an update to (its own, raised to what it had to inherit)."""
        return self._effective.get(update_id)

    def releases(self, update_id: bytes) -> tuple[Release, ...]:
        return tuple(self._releases.get(update_id, ()))

    def counted_releases(self) -> dict[bytes, tuple[Release, ...]]:
        """Every release that counts, by the update it releases (what a kept book must keep)."""
        return {of: tuple(found) for of, found in self._releases.items() if found}

    # ---------------------------------------------------------------- judging
    def add(self, item: Marked) -> Violation | None:
        """Judge ``item`` (the next readable update of the case) and remember it."""
        violation = self.judge(item)
        self.remember(item, violation)
        return violation

    def remember(self, item: Marked, violation: Violation | None) -> None:
        """Remember ``item`` as judged before (``add`` without judging: a book restored from its verdicts)."""
        self._items[item.update_id] = item
        effective = item.markings
        if violation is not None and violation.rule == V_DOWNGRADE:
            effective = effective.join(self.floor(item.inherits_from()))
        self._effective[item.update_id] = effective
        if violation is None and item.content_type == "release":
            release = Release.of_content(item.update_id, item.content)
            if release.of in self._items:
                self._releases.setdefault(release.of, []).append(release)

    def judge(self, item: Marked) -> Violation | None:
        """The first rule ``item`` breaks, or None; what a sender asks before it seals."""
        if item.content_type == "release":
            target = self._items.get(bytes.fromhex(str(item.content["of"])))
            if target is not None and not self.may_release(item, target):
                return Violation(
                    V_RELEASE_FORBIDDEN,
                    item.update_id,
                    f"{item.agency_id}:{item.user_id} released an update of {target.agency_id}:"
                    f"{target.user_id}; only its author or a supervisor of {target.agency_id} may",
                )
        own = item.markings
        for ref in item.inherits_from():
            parent = self._items.get(ref)
            if parent is None:  # not readable here: a later member cannot judge what it cannot see
                continue
            floor = self._effective[ref]
            if own.covers(floor) or self.may_release(item, parent):
                continue
            if any(
                r.to is not None and own.covers(r.to)
                for r in self._releases.get(ref, ())
                if r.serves({DOWNGRADE}, agency_id=item.agency_id, at=item.time)
            ):
                continue
            return Violation(
                V_DOWNGRADE,
                item.update_id,
                f"marked {own.label} but answers or quotes an update marked {floor.label},"
                " and its originator released no downgrade",
            )
        return None

    @staticmethod
    def may_release(actor: Marked, target: Marked) -> bool:
        """The author, or a supervisor of the author's agency, speaks for the provider."""
        if actor.agency_id != target.agency_id:
            return False
        return actor.user_id == target.user_id or actor.device_role == SUPERVISOR

    def floor(self, references: Iterable[bytes]) -> Markings:
        """The least markings an update naming ``references`` must carry (before any release)."""
        out = BOTTOM
        for ref in references:
            markings = self._effective.get(ref)
            if markings is not None:
                out = out.join(markings)
        return out

    # ---------------------------------------------------------------- permissions
    def may_export(self, update_id: bytes, *, agency_id: str, at: int) -> Permission:
        """Whether ``agency_id`` may disclose the update as evidence at ``at``."""
        needs: list[_Need] = []
        markings = self._effective[update_id]
        if markings.handling == "H1":
            needs.append(_Need(frozenset({EVIDENCE}), None, "it is H1 (not for court without release)"))
        elif markings.handling == "H2":
            needs.append(
                _Need(
                    frozenset({EVIDENCE, DISSEMINATE}), None, "it is H2 (not to be passed on without release)"
                )
            )
        elif markings.handling == "H3":
            if NO_EVIDENCE in markings.codes:
                needs.append(_Need(frozenset({EVIDENCE}), NO_EVIDENCE, "it is H3 no-evidence"))
            if NO_DISSEMINATION in markings.codes:
                needs.append(
                    _Need(frozenset({EVIDENCE, DISSEMINATE}), NO_DISSEMINATION, "it is H3 no-dissemination")
                )
        if markings.tlp == "RED":
            needs.append(_Need(frozenset({EVIDENCE, DISSEMINATE}), None, "it is TLP:RED"))
        return self._permit(update_id, needs, agency_id=agency_id, at=at, purpose="evidence")

    def may_share(self, update_id: bytes, *, agency_ids: Collection[str], at: int) -> Permission:
        """Whether the update may be shared with members added later, of ``agency_ids``."""
        markings = self._effective[update_id]
        if markings.tlp == "RED":
            return Permission(False, "it is TLP:RED, which is never shared with a member added later")
        item = self._items[update_id]
        used: list[bytes] = []
        for agency_id in sorted(set(agency_ids) - {item.agency_id}):
            needs: list[_Need] = []
            if markings.handling == "H2":
                needs.append(_Need(frozenset({DISSEMINATE, THIRD_PARTY}), None, "it is H2"))
            elif markings.handling == "H3":
                for code in (NO_DISSEMINATION, NO_THIRD_PARTY):
                    if code in markings.codes:
                        needs.append(_Need(frozenset({DISSEMINATE, THIRD_PARTY}), code, f"it is H3 {code}"))
            answer = self._permit(
                update_id, needs, agency_id=agency_id, at=at, purpose=f"sharing with {agency_id}"
            )
            if not answer.allowed:
                return answer
            used += answer.releases
        return Permission(True, releases=tuple(dict.fromkeys(used)))

    def judge_share(
        self, share_id: bytes, shared: Iterable[bytes], *, agency_ids: Collection[str], at: int
    ) -> Violation | None:
        """A history share handing over updates that may not go to its recipients' agencies."""
        for update_id in shared:
            if update_id not in self._items:
                continue
            answer = self.may_share(update_id, agency_ids=agency_ids, at=at)
            if not answer.allowed:
                rule = V_SHARED_RED if self._effective[update_id].tlp == "RED" else V_SHARED_RESTRICTED
                return Violation(
                    rule,
                    share_id,
                    f"shared update {update_id.hex()[:16]}… with a member added later: {answer.reason}",
                )
        return None

    def _permit(
        self, update_id: bytes, needs: list[_Need], *, agency_id: str, at: int, purpose: str
    ) -> Permission:
        item = self._items[update_id]
        if not needs or agency_id == item.agency_id:
            return Permission(True)
        used: list[bytes] = []
        for need in needs:
            found = next(
                (
                    r
                    for r in self._releases.get(update_id, ())
                    if r.serves(need.purposes, agency_id=agency_id, at=at, code=need.code)
                ),
                None,
            )
            if found is None:
                wanted = " or ".join(sorted(need.purposes))
                return Permission(
                    False,
                    f"{need.why}, and {item.agency_id} has released it for no {wanted} that covers"
                    f" {purpose} by {agency_id}",
                )
            used.append(found.release_id)
        return Permission(True, releases=tuple(dict.fromkeys(used)))
