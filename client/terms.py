"""Time-boxed and jointly approved membership, as an officer's client does it (PROTOCOL.md §5.5).

The rules themselves are the commit core's (``crypto/commits.py``): every
client and the broker check them on every commit.  What lives here is the
officer's side: an owner of another agency signs an approval against the
case's current commit and posts it *inside* the case (content type
``approval``), so that the owner who adds the member finds it there and
carries it into the commit without anyone passing files around.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from caseline.crypto.commits import EACH_AGENCY_OWNER, CaseState, sign_approval
from caseline.schemas.errors import CaselineError, NotPermittedError, UnknownError, UsageError
from caseline.schemas.wire import Approval, decode_signed

if TYPE_CHECKING:
    from caseline.client.content import Posted
    from caseline.client.core import CaseEvent, Ledger
    from caseline.crypto.caselog import CaseView
    from caseline.crypto.certs import VerifiedCert
    from caseline.crypto.keys import DeviceKeys

APPROVAL_TYPE = "approval"


def collect_approvals(state: CaseState, events: Iterable[CaseEvent], devices: Sequence[bytes]) -> list[bytes]:
    """The approvals posted in the case for ``devices`` against its current commit.

    Only a cheap filter: an approval for an older epoch is useless (it names
    another predecessor) and left out; everything else is the commit check's
    to judge, so a bad one makes the commit fail loudly rather than vanish.
    """
    wanted = set(devices)
    found: dict[bytes, bytes] = {}
    for event in events:
        if event.content_type != APPROVAL_TYPE or event.content is None:
            continue
        try:
            signed = base64.b64decode(event.content["approval"], validate=True)
            approval = Approval.decode(decode_signed(signed)[0])
        except (CaselineError, KeyError, TypeError, binascii.Error):
            continue  # not an approval this device can read: the next commit does not rely on it
        if approval.prev_commit == state.commit_hash and approval.device_id in wanted:
            found[approval.approver + approval.device_id] = signed  # the latest of each approver
    return list(found.values())


def approvals_missing(
    exc: NotPermittedError, case_id: bytes, *, users: Sequence[tuple[str, str, str]], expires: int | None
) -> NotPermittedError:
    """The refusal of an add that lacks approvals, with the command each agency's owner runs."""
    if "missing:" not in str(exc):
        return exc
    role = users[0][2] if users else "member"
    until = "" if expires is None else " --expires DATE"
    who = " ".join(f"{a}:{u}" for a, u, _ in users)
    return NotPermittedError(
        f"{exc}; nothing was committed. An owner of each of those agencies runs"
        f" `caseline case approve {case_id.hex()} {who} --role {role}{until}` (same role and expiry"
        " as this add), then add them again"
    )


class MembershipTerms:
    """``Client``'s membership-terms methods (a mixin: ``Client`` supplies the rest)."""

    if TYPE_CHECKING:
        keys: DeviceKeys
        clock: Callable[[], int]

        def _ledger(self) -> Ledger: ...
        async def view(self, case_id: bytes) -> CaseView: ...
        async def sync(self, case_id: bytes) -> list[CaseEvent]: ...
        async def _devices(self, agency_id: str, user_id: str) -> list[VerifiedCert]: ...
        async def refresh_revocations(self, *, force: bool = False) -> None: ...
        async def post_typed(
            self, case_id: bytes, content_type: str, fields: Mapping[str, Any]
        ) -> Posted: ...
        async def _commit(
            self,
            case_id: bytes,
            roster: Sequence[tuple[VerifiedCert, str]],
            *,
            terms: Mapping[bytes, int] | None = None,
            admission: str | None = None,
            approvals: Sequence[bytes] = (),
        ) -> None: ...

    async def renew(self, case_id: bytes, agency_id: str, user_id: str, *, until: int) -> list[bytes]:
        """Set a new end (ms) to a user's membership; returns the devices renewed.

        Also the way to keep a member whose term has ended: until the next
        commit they are still listed, and this commit carries them again.
        """
        if until <= self.clock():
            raise UsageError("a renewal must end later than now")
        await self.sync(case_id)
        state = (await self.view(case_id)).state
        if state is None:
            raise UnknownError("this device holds no such case")
        listed = [(state.certs[d], m.role) for d, m in state.members.items() if d not in state.voided]
        devices = [
            vc.device_id for vc, _ in listed if (vc.cert.agency_id, vc.cert.user_id) == (agency_id, user_id)
        ]
        if not devices:
            raise UnknownError(f"{agency_id}:{user_id} is not in the case")
        try:
            await self._commit(case_id, listed, terms=dict.fromkeys(devices, until))
        except NotPermittedError as exc:
            if "missing:" not in str(exc):
                raise
            # Ended, and no one else of its agency is left: renewing is admitting it again, and
            # nobody posts an approval while it can still read the epoch (PROTOCOL.md §5.5).
            raise NotPermittedError(
                f"{agency_id}:{user_id}'s membership has ended and the case requires approval to admit"
                f" {agency_id} again ({exc}): drop them (caseline case rekey {case_id.hex()}), have"
                " those agencies' owners approve, then add them again"
            ) from None
        return devices

    async def approve(
        self,
        case_id: bytes,
        agency_id: str,
        user_id: str,
        *,
        role: str = "member",
        expires: int | None = None,
    ) -> list[bytes]:
        """Approve a user's devices joining the case in its next commit; post each approval in it.

        The certificates come from the broker's directory and are verified
        here against the pinned root of their agency; the approval names the
        exact certificate, so a swapped device is not approved.  Returns the
        devices approved.
        """
        await self.sync(case_id)
        await self.refresh_revocations(force=True)
        state = (await self.view(case_id)).state
        if state is None:
            raise UnknownError("this device holds no such case")
        mine = state.members.get(self.keys.device_id)
        if mine is None or mine.role != "owner" or not state.active(self.keys.device_id):
            raise NotPermittedError("only an owner of the case may approve a new member")
        approved = []
        for vc in await self._devices(agency_id, user_id):
            signed = sign_approval(self.keys, state, device=vc, role=role, expires=expires)
            await self.post_typed(
                case_id,
                APPROVAL_TYPE,
                {"member": f"{agency_id}:{user_id}", "approval": base64.b64encode(signed).decode()},
            )
            approved.append(vc.device_id)
        return approved

    async def require_approval(self, case_id: bytes) -> None:
        """Turn on the rule that a third agency joins only with each other agency's owner's approval.

        Signed into the case by a commit; it cannot be turned off afterwards.
        """
        await self.sync(case_id)
        await self._commit(case_id, self._ledger().roster(case_id), admission=EACH_AGENCY_OWNER)
