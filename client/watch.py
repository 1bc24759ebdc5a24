"""The client's side of the witnessed log: hold the broker to what it showed, and count finality.

Every command's first contact with the broker asks where its log stands
(``GET /v1/log/witnessed``), with consistency proofs from the checkpoints this
profile holds, and the inclusion of the case's latest entry in the newest
witnessed checkpoint.  ``crypto.tlog.LogWatch`` decides; this shell fetches,
stores what moved forward and raises the alarm:

* a checkpoint smaller than, or inconsistent with, one held (a restored backup,
  a second broker started from a copy of the data) — at once;
* a report from one of this device's own agency's witnesses that the broker
  showed it two trees — at once;
* entries of a witnessed case that stay without the case's quorum for longer
  than its bound — when the bound passes.

An alarm is ``SplitViewError`` (exit 3).  Its proof, the signed notes that
show it, is saved under ``alarms/`` in the profile before it is raised, so the
agency can hand it to the partners and the broker's operator.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from caseline.crypto import note, tlog
from caseline.crypto.certs import TrustStore
from caseline.schemas.api import WitnessedAnswer
from caseline.schemas.errors import (
    BrokerForbidden,
    BrokerUnknownCase,
    CaselineError,
    ForkError,
    SplitViewError,
)
from caseline.schemas.wire import UNWITNESSED, EntryLeaf, LogRef, Witnessing

if TYPE_CHECKING:
    from caseline.client.core import Ledger
    from caseline.client.store import LocalStore
    from caseline.client.transport import BrokerConnection
    from caseline.crypto.caselog import CaseView
    from caseline.crypto.keys import DeviceKeys

log = logging.getLogger("caseline.client")

LATEST: Final = "log.latest"
WITNESSED: Final = "log.witnessed"
ALARMS_DIR: Final = "alarms"


@dataclasses.dataclass(frozen=True, slots=True)
class WitnessStatus:
    """How far the witnesses vouch for one case, as this device last checked."""

    rule: str  # "each-agency" or "none" (unwitnessed)
    count: int
    final: int
    witnessed_at: int | None
    pending_since: int | None
    alarm_after: int

    @classmethod
    def of(
        cls, rule: Witnessing, count: int, final: int, witnessed_at: int | None, pending_since: int | None
    ) -> WitnessStatus:
        return cls(rule.rule, count, min(final, count), witnessed_at, pending_since, rule.alarm_after)

    @property
    def witnessed(self) -> bool:
        return self.rule != "none"

    @property
    def pending(self) -> int:
        """Entries this device holds that no witnessed checkpoint covers yet."""
        return max(0, self.count - self.final) if self.witnessed else 0


class LogWatching:
    """``Client``'s witness checks (a mixin: ``Client`` supplies the rest)."""

    if TYPE_CHECKING:
        store: LocalStore
        directory: Path
        clock: Callable[[], int]
        trust: TrustStore
        server_key: bytes | None
        keys: DeviceKeys
        cert: bytes

        @property
        def broker(self) -> BrokerConnection: ...
        def _ledger(self) -> Ledger: ...
        async def view(self, case_id: bytes) -> CaseView: ...

    _lists_fetched: set[str]

    async def _load_witness_lists(self) -> None:
        self._lists_fetched = set()
        for body in await self.store.witness_lists():
            try:
                self.trust.add_witness_list(body)
            except CaselineError:
                continue  # its agency was unpinned since

    async def refresh_witness_lists(self, agencies: Iterable[str]) -> None:
        """Fetch the signed witness lists of pinned agencies (once per process each)."""
        for agency_id in sorted(set(agencies) - self._lists_fetched):
            if agency_id not in self.trust.roots:
                continue
            body = await self.broker.witnesses(agency_id)
            self._lists_fetched.add(agency_id)
            if body is None or body == self.trust.witness_list(agency_id):
                continue
            parsed = self.trust.add_witness_list(body)  # verified; an older list raises
            await self.store.put_witness_list(agency_id, parsed.number, body)

    def _watch(self, latest: bytes | None, witnessed: bytes | None) -> tlog.LogWatch:
        return tlog.LogWatch(self.server_key or b"", latest=latest, witnessed=witnessed)

    async def check_log(self, case_id: bytes | None = None) -> WitnessStatus | None:
        """Check the broker log against what this profile holds; for a case, update its finality.

        Raises ``SplitViewError`` (after saving its proof) on any alarm.
        """
        try:
            return await self._check_log(case_id)
        except SplitViewError as exc:
            raise self._alarm(exc) from None

    async def _check_log(self, case_id: bytes | None) -> WitnessStatus | None:
        latest, witnessed = await self.store.get(LATEST), await self.store.get(WITNESSED)
        watch = self._watch(latest, witnessed)
        held = watch.held_size()
        try:
            answer = await self.broker.log_witnessed(since=held, case_id=case_id)
        except (BrokerForbidden, BrokerUnknownCase):  # a removed member gets unknown-case
            if case_id is None or await self._still_member(case_id):
                raise  # a member's case part cannot be refused away: no finality, no bound
            # Removed from the case (its own view says so): the log is still checked, the
            # case's finality no longer is — this device reads nothing new in it.
            answer, case_id = await self.broker.log_witnessed(since=held), None
        if answer is None:
            if latest is not None:
                raise SplitViewError("the broker no longer shows its log to this device", proof=(latest,))
            return None
        watch.observe(
            latest=answer.latest,
            since_proof=answer.since_proof,
            witnessed=answer.witnessed,
            witnessed_proof=answer.witnessed_proof,
        )
        if watch.latest != latest and watch.latest is not None:
            await self.store.put(LATEST, watch.latest)
        if watch.witnessed != witnessed and watch.witnessed is not None:
            await self.store.put(WITNESSED, watch.witnessed)
        await self._ask_own_witnesses()
        await self._check_gossip()
        if case_id is None:
            return None
        view = await self.view(case_id)
        state = view.state
        if state is None:
            return None
        rule = state.witnessing
        final, witnessed_at, pending_since = await self.store.finality(case_id)
        receipt = None
        if rule.rule != "none":
            found = self._finality(watch, view, answer)
            if found is None and not state.agencies <= self._lists_fetched:
                await self.refresh_witness_lists(state.agencies)
                found = self._finality(watch, view, answer)
            if found is not None and found.final >= final and watch.witnessed is not None:
                final, witnessed_at = found.final, found.witnessed_at
                receipt = tlog.make_receipt(
                    EntryLeaf.decode(answer.leaf),
                    index=answer.index,
                    checkpoint=watch.witnessed,
                    proof=answer.inclusion,
                )
        now = self.clock()
        pending_since = None if final >= view.count else (pending_since or now)
        await self.store.put_finality(case_id, final, witnessed_at, pending_since, receipt)
        status = WitnessStatus.of(rule, view.count, final, witnessed_at, pending_since)
        if status.pending and pending_since is not None and now - pending_since > rule.alarm_after:
            raise SplitViewError(
                f"entries {status.final}..{status.count - 1} of this case have waited"
                f" {(now - pending_since) / 1000:.0f} s for the witnesses (the case allows"
                f" {rule.alarm_after / 1000:.0f} s): the broker may be showing this device a"
                " history the witnesses have not seen",
                proof=tuple(n for n in (watch.latest, watch.witnessed) if n),
            )
        return status

    async def _still_member(self, case_id: bytes) -> bool:
        state = (await self.view(case_id)).state
        return state is None or self.keys.device_id in state.members

    def _finality(
        self, watch: tlog.LogWatch, view: CaseView, answer: WitnessedAnswer
    ) -> tlog.Finality | None:
        state = view.state
        if state is None:
            return None
        return watch.finality(
            state_rule=state.witnessing,
            agencies=state.agencies,
            witnesses={a: self.trust.witnesses(a) for a in state.agencies},
            heads=view.heads,
            entry_hashes=view.entry_hashes,
            case_id=state.case_id,
            leaf=answer.leaf,
            index=answer.index,
            inclusion=answer.inclusion,
        )

    async def gossip_ref(self) -> LogRef | None:
        """The newest witnessed checkpoint this profile holds, as an update carries it (gossip)."""
        held = await self.store.get(WITNESSED)
        if held is None or self.server_key is None:
            return None
        checkpoint, _ = tlog.verify_checkpoint(held, self.server_key)
        return LogRef(size=checkpoint.size, root=checkpoint.root)

    async def _check_gossip(self) -> None:
        """Each checkpoint another member signed into an update must be part of the log we see.

        The broker proves it with a consistency proof from the gossiped size to
        its newest checkpoint; a member who saw a larger tree, or another root
        at that size, was shown another history than this device is.
        """
        ledger = self._ledger()
        while ledger.gossip:
            case_id, seq, ref = ledger.gossip[0]
            answer = await self.broker.log_witnessed(since=ref.size)
            if answer is None:
                raise SplitViewError("the broker stopped serving its log while members gossip about it")
            latest, _ = tlog.verify_checkpoint(answer.latest, self.server_key or b"")
            seen = note.Checkpoint(origin=latest.origin, size=ref.size, root=ref.root)
            try:
                tlog.check_consistent(seen, latest, answer.since_proof, what="log")
            except ForkError as exc:
                raise SplitViewError(
                    f"entry {seq} of case {case_id.hex()[:12]}: its author had seen a checkpoint of"
                    f" {ref.size} entries that this broker's log does not extend ({exc})",
                    proof=(answer.latest,),
                ) from None
            ledger.gossip.pop(0)

    async def _ask_own_witnesses(self) -> None:
        """Our agency's witnesses say whether the broker tried to show them two trees."""
        if not self.cert or self.server_key is None:
            return
        agency = self._agency()
        origin = tlog.log_origin(self.server_key)
        for w in self.trust.witnesses(agency):
            body = await self.broker.witness_equivocation(w.url, origin)
            if body is None:
                continue
            try:
                first, second = tlog.verify_equivocation(body, self.server_key)
            except CaselineError as exc:
                log.warning("witness %s sent an equivocation report that does not verify: %s", w.name, exc)
                continue
            raise SplitViewError(
                f"witness {w.name} of {agency} holds two different checkpoints of one size, both"
                " signed by the broker: it showed two histories",
                proof=(first, second),
            )

    async def submit_to_witnesses(self) -> list[tuple[str, str]]:
        """Hand the broker's newest checkpoint to this device's own agency's witnesses.

        For a broker that keeps its checkpoints from the witnesses: a member can
        take them there itself (C2SP tlog-witness ``add-checkpoint``, with the
        consistency proof from the size the witness last cosigned, which the
        broker must supply). A witness that refuses it as inconsistent with what
        it cosigned before has caught a split view: that is the alarm.
        """
        await self.check_log()
        key = self.server_key or b""
        origin = tlog.log_origin(key)
        outcomes: list[tuple[str, str]] = []
        for w in self.trust.witnesses(self._agency()):
            held = await self.broker.witness_checkpoint(w.url, origin)
            old_note = None
            old = 0
            if held is not None:
                cp, _ = tlog.verify_checkpoint(held, key)
                old, old_note = cp.size, held
            answer = await self.broker.log_witnessed(since=old)
            if answer is None:
                raise SplitViewError("the broker does not serve its log", proof=())
            new, _ = tlog.verify_checkpoint(answer.latest, key)
            if new.size <= old:
                outcomes.append((w.name, f"already holds {old} entries"))
                continue
            text = note.Note.parse(answer.latest).text
            proof_lines = b"".join(note.b64(h).encode() + b"\n" for h in answer.since_proof)
            body = f"old {old}\n".encode() + proof_lines + b"\n" + answer.latest
            status, reply = await self.broker.witness_add_checkpoint(w.url, body)
            if status == 200:
                sigs = note.parse_signature_lines(reply)
                mine = [s for s in sigs if s.name == w.name]
                at = [note.verify_cosignature(text, s, name=w.name, public_key=w.public_key) for s in mine]
                outcomes.append((w.name, f"cosigned {new.size} entries at {max(at, default=0)}"))
            elif status == 422 and old_note is not None:
                raise self._alarm(
                    SplitViewError(
                        f"witness {w.name} refused the broker's log as inconsistent with what it cosigned",
                        proof=(old_note, answer.latest),
                    )
                )
            else:
                outcomes.append((w.name, f"refused ({status}): {reply[:200].decode('utf-8', 'replace')}"))
        return outcomes

    def _agency(self) -> str:
        return self._ledger().trust.verify_cert(self.cert, at=self.clock()).cert.agency_id

    async def witness_status(self, case_id: bytes) -> WitnessStatus:
        """The case's finality as last checked, without asking anyone."""
        view = await self.view(case_id)
        rule = view.state.witnessing if view.state is not None else UNWITNESSED
        return WitnessStatus.of(rule, view.count, *await self.store.finality(case_id))

    def _alarm(self, exc: SplitViewError) -> SplitViewError:
        """Save the proof where the officer can hand it on, and say where."""
        folder = self.directory / ALARMS_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock() / 1000))
        path = folder / f"{stamp}-split-view.txt"
        parts = [f"caseline split-view alarm\n{exc}\n"]
        for i, proof in enumerate(exc.proof, 1):
            parts.append(f"\n--- signed note {i} ---\n{proof.decode('utf-8', 'replace')}")
        path.write_text("".join(parts), encoding="utf-8")
        path.chmod(0o600)
        log.error("split-view alarm: %s (proof saved in %s)", exc, path)
        return SplitViewError(f"{exc} — proof saved in {path}", proof=exc.proof)
