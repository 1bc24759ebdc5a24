"""Where a profile keeps its verified case views between runs, sealed under the local key.

Opening a profile used to replay every stored entry of a case through
``CaseView.apply``: 33 s for a 100,000-entry case, on every command.  Now the
last verified view is kept as a snapshot (``caseline.crypto.snapshot``) sealed
with XChaCha20-Poly1305 under ``DeviceSecrets.local_key``; its associated data
binds the case id, the snapshot's entry count and its format version.  On open
the snapshot is restored and only the stored entries after its count are
verified.

A snapshot is all or nothing.  One that fails to open (tampered, another
device's, moved to another case or count), has a format version this code
does not know, does not decode, or was verified under other trust than holds
now (a revocation or pin of one of the case's devices changed) is discarded,
and the caller rebuilds the view from genesis — it is never trusted in part.
A stale one is harmless: the entries after it are verified as they would be
from genesis.

Base plus delta
---------------
Rewriting the whole snapshot costs about as much as loading it (0.2 s for a
100,000-entry case), and a ``caseline post`` moves a view by one or two
entries.  So a stored snapshot is rewritten only once the view has moved
``REWRITE_AFTER`` entries past it; until then the snapshot is the base and
the delta is the entries after it in the profile's own log, which the next
open verifies again (about a third of a millisecond each: at most
``REWRITE_AFTER`` of them, ~10 ms).  That delta needs no seal of its own: it
is re-verified, never believed.  A case with no snapshot yet is always
written.  At this threshold a post pays on average ~5 ms of replay and ~8 ms
of amortised rewrite instead of 0.2 s every time.

Several processes may use one profile at once (a ``follow`` and a ``post``):
a snapshot is written only when it is further along than the stored one
(``LocalStore.put_view_snapshot``).  The events each entry produced are kept
sealed beside it (``core_state`` says why), and so is the case's marking rule
book as it stood at the snapshot's count (``core_marks`` says why), bound to
that count: one that does not match is rebuilt from the stored events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import msgpack
from caseline.client import core_state
from caseline.client.core import CaseEvent
from caseline.client.core_marks import CaseMarks
from caseline.client.store import LocalStore
from caseline.crypto.caselog import CaseView
from caseline.crypto.certs import TrustStore
from caseline.crypto.keys import DeviceKeys
from caseline.crypto.snapshot import SNAPSHOT_VERSION, Snapshot, snapshot, trust_binding
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import CaselineError

log = logging.getLogger(__name__)

Rng = Callable[[int], bytes]
#: A stored snapshot is rewritten once the view is this many entries past it (see above).
REWRITE_AFTER: Final = 32


def _marks_name(case_id: bytes) -> str:
    return f"case-marks:{case_id.hex()}"


class ViewStore:
    """Sealed snapshots, events and small secrets of one profile, for one device."""

    def __init__(self, store: LocalStore, *, local_key: bytes, device_id: bytes, rng: Rng) -> None:
        self.store = store
        self._key = local_key
        self._device_id = device_id
        self._rng = rng
        #: Loaded or saved counts per case: a save that would not move forward is skipped.
        self.saved: dict[bytes, int] = {}

    def _seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return core_state.seal(self._key, self._rng(24), plaintext, aad)

    # ---------------------------------------------------------------- snapshots
    async def load(self, case_id: bytes, *, trust: TrustStore, me: DeviceKeys) -> CaseView | None:
        """The stored view of ``case_id`` if it opens, decodes and is bound to today's trust.

        Returns None — the caller rebuilds from genesis — for a missing, foreign,
        tampered, unknown-version or stale snapshot; a discarded one is deleted.
        """
        row = await self.store.view_snapshot(case_id)
        if row is None:
            return None
        count, version, sealed = row
        try:
            if version != SNAPSHOT_VERSION:
                raise LookupError(f"format version {version}")
            frozen = Snapshot(
                core_state.open_sealed(self._key, sealed, core_state.snapshot_aad(case_id, count, version))
            )
            if frozen.case_id != case_id or frozen.count != count:
                raise LookupError("snapshot names another case or count than its row")
            bodies = await self.store.entry_bodies(case_id, list(frozen.held_seqs))
            view = frozen.restore(trust=trust, me=me, held_bodies=bodies)
            if trust_binding(view, trust) != frozen.binding:
                raise LookupError("verified under other pins or revocations than held now")
        except (CaselineError, LookupError, ValueError, TypeError) as exc:
            log.info(
                "case %s: discarding its view snapshot (%s); re-verifying from genesis", case_id.hex(), exc
            )
            await self.store.drop_view_snapshot(case_id)
            return None
        self.saved[case_id] = count
        return view

    async def save(
        self,
        case_id: bytes,
        view: CaseView,
        trust: TrustStore,
        *,
        force: bool = False,
        marks: CaseMarks | None = None,
    ) -> bool:
        """Seal and keep ``view`` if it is far enough past what this process last loaded or saved.

        With a snapshot already stored (loaded or saved by this process), only
        once the view is ``REWRITE_AFTER`` entries further; ``force`` writes it
        whenever it is further at all.
        """
        base = self.saved.get(case_id, 0)
        if view.state is None or view.count <= base:
            return False
        if base and not force and view.count - base < REWRITE_AFTER:
            return False  # the entries since the base are the delta: the next open re-verifies them
        data = snapshot(view, binding=trust_binding(view, trust))
        aad = core_state.snapshot_aad(case_id, view.count, SNAPSHOT_VERSION)
        sealed = self._seal(data, aad)
        written = await self.store.put_view_snapshot(case_id, view.count, SNAPSHOT_VERSION, sealed)
        if written and marks is not None:
            kept = self._seal(marks.export(), core_state.marks_aad(case_id, view.count, sealed))
            await self.store.put(_marks_name(case_id), kept)
        self.saved[case_id] = view.count
        return written

    async def keep_marks(self, case_id: bytes, count: int, marks: CaseMarks) -> None:
        """Keep ``marks`` (the book at ``count``) with the stored snapshot, if that is at ``count``.

        For a snapshot that has none (written before books were kept, or its
        book failed to open): rebuilt once, not at every command until the
        snapshot is next rewritten.
        """
        row = await self.store.view_snapshot(case_id)
        if row is not None and row[0] == count:
            kept = self._seal(marks.export(), core_state.marks_aad(case_id, count, row[2]))
            await self.store.put(_marks_name(case_id), kept)

    async def load_marks(self, case_id: bytes, count: int) -> CaseMarks | None:
        """The rule book kept with the stored snapshot, if that is still at ``count`` (the view's).

        None if absent, or kept with another snapshot: the caller rebuilds it.
        """
        row = await self.store.view_snapshot(case_id)
        blob = await self.store.get(_marks_name(case_id))
        if row is None or blob is None or row[0] != count:
            return None
        _, _, sealed = row
        try:
            return CaseMarks.restore(
                core_state.open_sealed(self._key, blob, core_state.marks_aad(case_id, count, sealed))
            )
        except CaselineError:
            return None

    async def drop(self, case_id: bytes) -> None:
        self.saved.pop(case_id, None)
        await self.store.drop_view_snapshot(case_id)

    # ---------------------------------------------------------------- events
    async def put_events(self, case_id: bytes, events: Sequence[CaseEvent]) -> None:
        """Keep events grouped by the entry that produced them (a share's unlocked ones ride along)."""
        groups: list[list[CaseEvent]] = []
        for event in events:
            if event.shared and groups:
                groups[-1].append(event)
            else:
                groups.append([event])
        rows = []
        for group in groups:
            seq = group[0].seq
            rows.append(
                (seq, self._seal(core_state.encode_events(group), core_state.events_aad(case_id, seq)))
            )
        await self.store.put_events(case_id, rows)

    async def events(self, case_id: bytes, after: int = 0, *, before: int | None = None) -> list[CaseEvent]:
        """Stored events of entries from ``after`` on (and before ``before``), in the order stored.

        One that fails to open is an error, not a gap.
        """
        out: list[CaseEvent] = []
        for seq, sealed in await self.store.events(case_id, after):
            if before is not None and seq >= before:
                break
            plain = core_state.open_sealed(self._key, sealed, core_state.events_aad(case_id, seq))
            out += core_state.decode_events(case_id, plain)
        return out

    # ---------------------------------------------------------------- where requests stand
    async def update_workflow(self, case_id: bytes, change: Callable[[object | None], object]) -> None:
        """Change a case's index atomically (``LocalStore.update_workflow``); None: none usable.

        A state is ``Workflow.state()``: its first two items (roster, open rows)
        are sealed as one part, the others as the second.
        """

        def sealed_change(parts: tuple[bytes, bytes] | None) -> tuple[bytes, bytes]:
            state = None if parts is None else self._open_workflow(case_id, *parts)
            new = change(state)
            if not isinstance(new, list) or len(new) < 2:
                raise TypeError("a request index state is a list of at least two items")
            return (
                self._seal(pack(new[:2]), core_state.workflow_aad(case_id, "open")),
                self._seal(pack(new[2:]), core_state.workflow_aad(case_id, "rest")),
            )

        await self.store.update_workflow(case_id, sealed_change)

    def _open_workflow(self, case_id: bytes, open_part: bytes, rest: bytes | None) -> list[object] | None:
        """A stored index that does not open or decode is None: the caller rebuilds it from events.

        Without ``rest``: only the roster and the open rows.  Decoded with plain
        msgpack, not the wire codec's canonical checks (which walk and re-encode
        the tree, tripling what ``due`` pays over every case): each part opened
        under this device's local key, so it is what this device wrote.
        """
        try:
            state: list[object] = list(self._unseal(case_id, "open", open_part))
            if rest is not None:
                state += list(self._unseal(case_id, "rest", rest))
        except (CaselineError, ValueError, TypeError, msgpack.UnpackException):
            return None
        return state

    def _unseal(self, case_id: bytes, part: str, sealed: bytes) -> list[object]:
        plain = core_state.open_sealed(self._key, sealed, core_state.workflow_aad(case_id, part))
        value = msgpack.unpackb(plain, raw=False, use_list=True, strict_map_key=True)
        if not isinstance(value, list):
            raise TypeError("not a list")
        return value

    async def workflow(self, case_id: bytes) -> list[object] | None:
        parts = await self.store.workflow(case_id)
        return None if parts is None else self._open_workflow(case_id, *parts)

    async def workflows(self, *, full: bool) -> dict[bytes, list[object] | None]:
        """Every case's index; unless ``full``, only its roster and open rows (what ``due`` reads)."""
        return {
            case_id: self._open_workflow(case_id, open_part, rest)
            for case_id, open_part, rest in await self.store.workflows(full=full)
        }

    # ---------------------------------------------------------------- small sealed values
    async def get_secret(self, name: str) -> list[object] | None:
        """A sealed value kept in ``meta``; None if absent or if it does not open (then forgotten)."""
        blob = await self.store.get(name)
        if blob is None:
            return None
        try:
            value = unpack(
                core_state.open_sealed(self._key, blob, core_state.meta_aad(name, self._device_id))
            )
        except CaselineError:
            return None
        return value if isinstance(value, list) else None

    async def put_secret(self, name: str, value: list[object]) -> None:
        await self.store.put(name, self._seal(pack(value), core_state.meta_aad(name, self._device_id)))
