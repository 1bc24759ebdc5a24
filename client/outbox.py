"""Posting exactly once: the outbox, the profile's posting lock, receipts and refusals.

An update's final bytes are kept in the outbox (its content sealed under the
device's local key) before its message key is used up and before its first
send, so every retry — in this run, or in the next after a crash or Ctrl-C —
sends those same bytes, and the broker stores them at most once.  One process
at a time seals new updates from a profile (``PostingLock``); the decisions —
is this receipt for my update, should a refused one be sealed again — are the
pure core's (``Ledger``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from caseline.client import keystore
from caseline.client.attachments import Attachable, plan_files
from caseline.client.content import Posted
from caseline.client.profile import PostingLock
from caseline.client.store import LocalStore, Pending, StoredEntry
from caseline.client.transport import with_retries
from caseline.client.uploads import AttachmentSource, Draft, PlannedFile, ProgressSink
from caseline.crypto import primitives as P
from caseline.crypto.caselog import KIND_UPDATE
from caseline.schemas import content as content_schemas
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import (
    BrokerRefusal,
    ContentError,
    InvalidContentError,
    PostedAfterRevocationError,
    ProfileError,
    UsageError,
)
from caseline.schemas.wire import AttachmentRef

if TYPE_CHECKING:
    from caseline.client.core import CaseEvent, Ledger
    from caseline.client.transport import BrokerConnection
    from caseline.crypto.caselog import AnyReceipt, CaseView
    from caseline.schemas.wire import LogRef

log = logging.getLogger("caseline.client")


def utc_text(ms: int) -> str:
    """A time as the CLI shows it (``2026-12-03 08:15:02Z``)."""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


#: How long a post waits for another process posting from the same profile.
POSTING_LOCK_WAIT_S: Final = 120.0


class Outbox:
    """``Client.post`` and ``Client.flush`` (a mixin: ``Client`` supplies the rest)."""

    if TYPE_CHECKING:
        store: LocalStore
        clock: Callable[[], int]
        retries: int
        _secrets: keystore.DeviceSecrets
        _post_lock: asyncio.Lock
        _profile_lock: PostingLock

        @property
        def broker(self) -> BrokerConnection: ...
        def _ledger(self) -> Ledger: ...
        async def view(self, case_id: bytes) -> CaseView: ...
        async def sync(self, case_id: bytes) -> list[CaseEvent]: ...
        async def history(self, case_id: bytes) -> list[CaseEvent]: ...
        async def _accept(self, case_id: bytes, entries: Sequence[StoredEntry]) -> list[CaseEvent]: ...
        async def gossip_ref(self) -> LogRef | None: ...
        async def _revoked_since_post(self, case_id: bytes, seq: int) -> int | None: ...
        async def _drafts(self, case_id: bytes | None = None) -> list[Draft]: ...
        async def _new_draft(
            self,
            case_id: bytes,
            content_type: str,
            content: bytes,
            files: Sequence[PlannedFile],
            key_name: str | None = None,
        ) -> Draft: ...
        async def _upload_draft(
            self,
            draft: Draft,
            *,
            sources: Sequence[AttachmentSource | None] = (),
            progress: ProgressSink | None = None,
            tries: int = 5,
        ) -> Draft: ...

    def _seal_local(
        self, update_id: bytes, content_type: str, content: bytes, refs: Sequence[AttachmentRef] = ()
    ) -> bytes:
        """What a refused update needs to be sealed again, under the local key: its content, and
        its files' references (keys included) when it has any."""
        nonce = secrets.token_bytes(P.AEAD_NONCE_SIZE)
        aad = P.label("outbox") + update_id
        kept: list[object] = [content_type, content]
        if refs:
            kept.append([r.to_fields() for r in refs])
        return nonce + P.xchacha_seal(self._secrets.local_key, nonce, pack(kept), aad)

    def _open_local(self, pending: Pending) -> tuple[str, bytes]:
        content_type, data, _ = self._open_local_all(pending)
        return content_type, data

    def _open_local_all(self, pending: Pending) -> tuple[str, bytes, tuple[AttachmentRef, ...]]:
        nonce, sealed = (
            pending.sealed_content[: P.AEAD_NONCE_SIZE],
            pending.sealed_content[P.AEAD_NONCE_SIZE :],
        )
        obj = unpack(
            P.xchacha_open(self._secrets.local_key, nonce, sealed, P.label("outbox") + pending.update_id)
        )
        refs = tuple(AttachmentRef.from_fields(r, where="attachment") for r in obj[2]) if obj[2:] else ()
        return str(obj[0]), bytes(obj[1]), refs

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
    ) -> Posted:
        """Seal, sign and post one update exactly once, however often it must be retried.

        ``attachments``: up to 16 files, each a path (named by its basename,
        its media type guessed from it) or an ``AttachmentSource``.  Every
        file is checked before anything is sent (a directory, a pipe, an
        unreadable file: ``UsageError``).  The post is journalled first (sealed
        under the local key), each file is encrypted as it is read and
        uploaded in parts, each blob's address is checked against the
        broker's, and only then is the update sealed with their references
        and posted.  A run cut anywhere — Ctrl-C, a network cut, ``kill -9`` —
        is finished by the next ``post`` or ``flush`` of this profile, from
        the broker's offset: at most one part is sent again.  A file that
        changed meanwhile stops that post (``UsageError``, or
        ``IntegrityError`` if only its bytes differ) and leaves it journalled
        until ``drop_pending``.  ``progress`` hears of every upload.

        ``idempotency_key`` extends that to whole runs of a script: a second call
        with the same key returns the first update instead of posting again.

        ``PostedAfterRevocationError`` (exit 3) means the broker took the update
        but this device's agency had revoked the device by its time: it stays
        in the case, and every member shows it voided.  Learnt from the own
        agency's list asked for after the receipt; a revocation published later
        than that is learnt by members (and this device) only when it is.  When
        the voided update is an earlier run's, sent first from the outbox, this
        one is not sealed or sent (it would be voided too), and the error says
        which update it concerns (``earlier``).
        """
        if isinstance(content, Mapping):
            try:
                data = content_schemas.encode_content(content_type, content)
            except ContentError as exc:
                raise InvalidContentError(str(exc), fix=exc.fix) from None
        else:
            data = content
        planned = plan_files(attachments, secrets.token_bytes) if attachments else []
        async with self._posting():
            return await self._post_locked(
                case_id, content_type, data, tries, idempotency_key, files=planned, progress=progress
            )

    @contextlib.asynccontextmanager
    async def _posting(self) -> AsyncIterator[None]:
        """Hold this profile's posting lock: in this process, then across processes."""
        async with self._post_lock:
            if not self._profile_lock.try_acquire():
                log.warning(
                    "waiting for another caseline process (pid %s) that is posting from this profile",
                    self._profile_lock.holder(),
                )
                deadline, pause = time.monotonic() + POSTING_LOCK_WAIT_S, 0.02
                while not self._profile_lock.try_acquire():
                    if time.monotonic() > deadline:
                        raise ProfileError(
                            f"another caseline process (pid {self._profile_lock.holder()}) has been"
                            f" posting from this profile for over {POSTING_LOCK_WAIT_S:.0f} s"
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.5)
            try:
                yield
            finally:
                self._profile_lock.release()

    async def _post_locked(
        self,
        case_id: bytes,
        content_type: str,
        data: bytes,
        tries: int,
        idempotency_key: str | None,
        *,
        files: Sequence[tuple[PlannedFile, AttachmentSource | None]] = (),
        progress: ProgressSink | None = None,
        refs: Sequence[AttachmentRef] = (),
    ) -> Posted:
        # Another process of this profile may have posted since: sync first, so
        # the next position is sealed from the log, not from a stale memory.
        await self.sync(case_id)
        # Whatever an earlier run sealed goes first, in order.  If it holds this
        # very content, this call is that run's retry: it must not post twice.
        retried = None
        for pending in await self.store.outbox(case_id):
            same = self._open_local(pending) == (content_type, data)
            try:
                posted = await self._deliver(pending, tries=tries)
            except PostedAfterRevocationError as exc:
                if same:
                    raise
                # An earlier update turned out voided: this device is revoked, so this
                # one would be too.  It is not sealed or sent, and the error says so.
                raise PostedAfterRevocationError(
                    case_id=exc.case_id, update_id=exc.update_id, seq=exc.seq,
                    revoked_at=exc.revoked_at, shown_at=utc_text(exc.revoked_at), earlier=True,
                ) from None  # fmt: skip
            retried = posted if same and retried is None else retried
        # Then posts with files an earlier run journalled: their uploads resume.
        names = [(f.name, f.size) for f, _ in files]
        for draft in await self._drafts(case_id):
            posted = await self._finish_draft(draft, tries=tries, progress=progress)
            if draft.same_post(content_type, data, names) and retried is None:
                retried = posted
        if retried is not None:
            return retried
        key_name = None
        if idempotency_key is not None:
            key_name = "posted:" + P.hash_labeled("idempotency-key", case_id, idempotency_key.encode()).hex()
            earlier = await self.store.get(key_name)
            if earlier is not None:
                return await self._posted_before(case_id, earlier)
        if files:
            # Checked (for the sender's own mistakes) before the journal or any byte is sent.
            self._ledger().prepare(
                case_id, content_type=content_type, content=data, now=self.clock(), nonce=bytes(24)
            )
            draft = await self._new_draft(case_id, content_type, data, [f for f, _ in files], key_name)
            return await self._finish_draft(
                draft, tries=tries, progress=progress, sources=[s for _, s in files]
            )
        return await self._seal_and_deliver(case_id, content_type, data, refs, tries=tries, key_name=key_name)

    async def _finish_draft(
        self,
        draft: Draft,
        *,
        tries: int,
        progress: ProgressSink | None,
        sources: Sequence[AttachmentSource | None] = (),
    ) -> Posted:
        """Upload what is left of a journalled post with files, then seal and post its update."""
        draft = await self._upload_draft(draft, sources=sources, progress=progress, tries=tries)
        return await self._seal_and_deliver(
            draft.case_id,
            draft.content_type,
            draft.content,
            draft.refs,
            tries=tries,
            key_name=draft.key_name,
            draft_id=draft.draft_id,
        )

    async def _seal_and_deliver(
        self,
        case_id: bytes,
        content_type: str,
        data: bytes,
        refs: Sequence[AttachmentRef],
        *,
        tries: int,
        key_name: str | None,
        draft_id: bytes | None = None,
    ) -> Posted:
        ledger = self._ledger()
        staged = ledger.prepare(
            case_id,
            content_type=content_type,
            content=data,
            now=self.clock(),
            nonce=secrets.token_bytes(24),
            witnessed=await self.gossip_ref(),
            attachments=refs,
        )
        sealed = staged.sealed
        pending = Pending(
            update_id=sealed.update_id,
            case_id=case_id,
            envelope=sealed.envelope,
            sealed_content=self._seal_local(sealed.update_id, content_type, data, refs),
            created_at=self.clock(),
        )
        if draft_id is None:
            await self.store.add_pending(pending)
        else:
            await self.store.promote_draft(draft_id, pending)
        ledger.confirm(case_id, staged)  # only now is the message key used up
        if key_name is not None:
            await self.store.put(key_name, sealed.update_id)
        return await self._deliver(pending, tries=tries)

    async def _posted_before(self, case_id: bytes, update_id: bytes) -> Posted:
        for event in await self.history(case_id):
            if event.kind == "update" and event.update_id == update_id:
                return Posted(
                    case_id=case_id, update_id=update_id, seq=event.seq, receipt_time=event.time, retries=0
                )
        raise UsageError("an update with this idempotency key was refused earlier; use a new key")

    async def flush(
        self, case_id: bytes | None = None, *, tries: int = 5, progress: ProgressSink | None = None
    ) -> list[Posted]:
        """Send what an earlier run sealed but could not confirm, in order, before anything new;
        then finish the posts with files an earlier run journalled (their uploads resume)."""
        async with self._posting():
            posted = [await self._deliver(p, tries=tries) for p in await self.store.outbox(case_id)]
            for draft in await self._drafts(case_id):
                await self.sync(draft.case_id)
                posted.append(await self._finish_draft(draft, tries=tries, progress=progress))
            return posted

    async def _deliver(self, pending: Pending, *, tries: int) -> Posted:
        case_id = pending.case_id
        retries = 0

        def count(_: BrokerRefusal, __: int) -> None:
            nonlocal retries
            retries += 1
            self.retries += 1

        try:
            receipt = await with_retries(
                lambda: self.broker.post_update(case_id, pending.envelope), tries=tries, on_retry=count
            )
        except BrokerRefusal as exc:
            if exc.transient:
                raise  # kept in the outbox: the next run sends the same bytes
            return await self._refused(pending, exc, tries=tries)
        ledger = self._ledger()
        r = ledger.check_receipt(case_id, pending.envelope, receipt)
        await self.store.drop_pending(pending.update_id)
        await self._settle(case_id, pending.envelope, receipt, r)
        ledger.check_acknowledged(case_id, r)
        revoked_at = await self._revoked_since_post(case_id, r.seq)
        if revoked_at is not None:
            raise PostedAfterRevocationError(
                case_id=case_id,
                update_id=pending.update_id,
                seq=r.seq,
                revoked_at=revoked_at,
                shown_at=utc_text(revoked_at),
            )
        return Posted(
            case_id=case_id, update_id=pending.update_id, seq=r.seq, receipt_time=r.time, retries=retries
        )

    async def _settle(self, case_id: bytes, envelope: bytes, receipt: bytes, checked: AnyReceipt) -> None:
        """Take a just-posted update into the view from its receipt, or sync if others came first.

        When the receipt's position is the next one this view expects, the
        update and its receipt are all the broker would send for it: applying
        them checks the receipt's head against the chain this view computed,
        as a sync would, one request sooner.
        """
        view = await self.view(case_id)
        if self._ledger().receipt_is_next(case_id, checked):
            await self._accept(case_id, [StoredEntry(view.count, KIND_UPDATE, envelope, receipt)])
        else:
            await self.sync(case_id)

    async def _refused(self, pending: Pending, exc: BrokerRefusal, *, tries: int) -> Posted:
        """A definitive no.  If a membership change overtook the update, seal it again."""
        await self.store.drop_pending(pending.update_id)
        view = await self.view(pending.case_id)
        view.abandon_unsent()
        await self.sync(pending.case_id)
        if self._ledger().reseal_after_refusal(pending.case_id, pending.envelope, exc.status):
            content_type, data, refs = self._open_local_all(pending)
            return await self._post_locked(pending.case_id, content_type, data, tries, None, refs=refs)
        raise exc
