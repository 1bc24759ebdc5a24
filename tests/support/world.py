"""A deterministic little world of agencies, devices and cases for protocol tests.

Randomness comes from a seeded DRBG so failures reproduce; time is an integer
the test advances by hand.  Nothing here stands in for the code under test: it
only drives the real core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from caseline.crypto import merkle, tlog
from caseline.crypto.caselog import (
    KIND_COMMIT,
    KIND_UPDATE,
    Applied,
    CaseView,
    entry_hash,
    next_head,
)
from caseline.crypto.certs import TrustStore, VerifiedCert, issue_device_cert, issue_revocation_list
from caseline.crypto.commits import CaseState, create_commit, log_anchor, verify_commit
from caseline.crypto.keys import AgencyRootKey, DeviceKeys, SigningKey
from caseline.schemas.wire import (
    CaseInfo,
    CommitMessage,
    EntryLeaf,
    LogPosition,
    Policy,
    Revocation,
    Witnessing,
)

T0 = 1_790_000_000_000  # 2026-09 in ms
YEAR = 365 * 24 * 3600 * 1000

MARKINGS = {
    "handling": "H2",
    "tlp": "AMBER",
    "source_reliability": "B",
    "information_assessment": "2",
}


def note(text: str = "hello") -> bytes:
    return json.dumps({"markings": {"handling": "H0", "tlp": "GREEN"}, "lang": "en", "text": text}).encode()


class Drbg:
    """Deterministic bytes for tests (SHAKE-256 in counter mode)."""

    def __init__(self, seed: bytes | str) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return hashlib.shake_256(self.seed + self.n.to_bytes(8, "big")).digest(size)


@dataclasses.dataclass
class Device:
    keys: DeviceKeys
    cert: bytes
    user: str
    agency: str

    @property
    def id(self) -> bytes:
        return self.keys.device_id


class World:
    """Agencies with pinned roots, enrolled devices, a broker log and a receipt key."""

    def __init__(self, seed: str = "world") -> None:
        self.rng = Drbg(seed)
        self.now = T0
        self.roots: dict[str, AgencyRootKey] = {}
        self.serial = 0
        self.server_key = SigningKey(self.rng(32))
        self.crl_numbers: dict[str, int] = {}
        self.revocations: dict[str, list[Revocation]] = {}
        self.crls: list[bytes] = []

    def agency(self, agency_id: str) -> AgencyRootKey:
        root = AgencyRootKey(agency_id, self.rng(32))
        self.roots[agency_id] = root
        return root

    def trust(self) -> TrustStore:
        store = TrustStore({a: r.public_key for a, r in self.roots.items()})
        for crl in self.crls:
            store.add_revocation_list(crl)
        return store

    def device(self, agency: str, user: str, role: str = "officer", scopes: tuple[str, ...] = ()) -> Device:
        keys = DeviceKeys(sign_seed=self.rng(32), kem_seed=self.rng(32))
        self.serial += 1
        cert = issue_device_cert(
            self.roots[agency],
            user_id=user,
            role=role,
            scopes=scopes,
            sign_key=keys.sign_public,
            kem_key=keys.kem_public,
            not_before=self.now - 1000,
            not_after=self.now + YEAR,
            serial=self.serial,
        )
        return Device(keys=keys, cert=cert, user=user, agency=agency)

    def revoke(self, device: Device, at: int | None = None) -> bytes:
        number = self.crl_numbers.get(device.agency, 0) + 1
        self.crl_numbers[device.agency] = number
        entries = self.revocations.setdefault(device.agency, [])
        entries.append(
            Revocation(
                device_id=device.id,
                serial=0,
                revoked_at=self.now if at is None else at,
                reason="device-lost",
            )
        )
        crl = issue_revocation_list(
            self.roots[device.agency], number=number, issued_at=self.now, entries=entries
        )
        self.crls.append(crl)
        return crl

    def policy(self, **overrides: Any) -> Policy:
        fields: dict[str, Any] = {
            "retention_days": 365,
            "handling": "H2",
            "tlp": "AMBER",
            "history": "shared",
            "receipt_key": self.server_key.public_key,
        }
        fields.update(overrides)
        return Policy(**fields)

    def verified(self, device: Device) -> VerifiedCert:
        return self.trust().verify_cert(device.cert, at=self.now)


class Broker:
    """An honest in-memory broker log: what the real server does, minus I/O."""

    def __init__(self, world: World, case_id: bytes) -> None:
        self.world = world
        self.case_id = case_id
        self.entries: list[tuple[str, bytes]] = []
        self.receipts: list[bytes] = []
        self.head = log_anchor(case_id)
        self.tree = merkle.Tree()

    def append(self, kind: str, body: bytes) -> bytes:
        """Order an entry and give it a log receipt: a checkpoint of one entry's batch."""
        seq = len(self.entries)
        eh = entry_hash(kind, body)
        self.head = next_head(self.head, seq, eh)
        leaf = EntryLeaf(case_id=self.case_id, seq=seq, entry_hash=eh, head=self.head, time=self.world.now)
        index = self.tree.append(merkle.leaf_hash(leaf.encode()))
        size = self.tree.size
        checkpoint = tlog.sign_checkpoint(self.world.server_key, size=size, root=self.tree.root(size))
        receipt = tlog.make_receipt(
            leaf, index=index, checkpoint=checkpoint, proof=self.tree.inclusion_proof(index, size)
        )
        self.entries.append((kind, body))
        self.receipts.append(receipt)
        return receipt

    def receipt_leaf(self, seq: int) -> EntryLeaf:
        return tlog.receipt_leaf(self.receipts[seq])

    def feed(self, view: CaseView, start: int | None = None, stop: int | None = None) -> list[Applied]:
        out = []
        for seq in range(view.count if start is None else start, len(self.entries) if stop is None else stop):
            kind, body = self.entries[seq]
            out.append(
                view.apply(seq=seq, kind=kind, body=body, now=self.world.now, receipt=self.receipts[seq])
            )
        return out


def open_case(
    world: World,
    owner: Device,
    members: list[tuple[Device, str]],
    *,
    policy: Policy | None = None,
    title: str = "Operation Kilimanjaro",
    witnessing: Witnessing | None = None,
    **rules: Any,
) -> tuple[Broker, CaseState, bytes]:
    """Create a genesis commit and post it to a fresh broker log (``rules``: membership terms)."""
    case_id = world.rng(16)
    trust = world.trust()
    roster = [(trust.verify_cert(owner.cert, at=world.now), "owner")]
    roster += [(trust.verify_cert(d.cert, at=world.now), role) for d, role in members]
    body, secret = create_commit(
        prev=None,
        case_id=case_id,
        committer=owner.keys,
        roster=roster,
        policy=policy or world.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=CaseInfo(title=title, reference="KE-2026-0042"),
        now=world.now,
        rng=world.rng,
        witnessing=witnessing,
        **rules,
    )
    state = verify_commit(None, CommitMessage.decode(body), trust=trust, now=world.now)
    broker = Broker(world, case_id)
    broker.append(KIND_COMMIT, body)
    return broker, state, secret


def commit_change(
    world: World,
    view: CaseView,
    committer: Device,
    roster: list[tuple[Device, str]],
    *,
    policy: Policy | None = None,
    **rules: Any,
) -> bytes:
    """The committer builds the next commit from its own view (does not post it).

    ``rules`` go to ``create_commit`` as they are: ``terms``, ``admission``, ``approvals``.
    """
    assert view.state is not None
    trust = world.trust()
    body, _ = create_commit(
        prev=view.state,
        case_id=view.state.case_id,
        committer=committer.keys,
        roster=[(trust.verify_cert(d.cert, at=world.now), role) for d, role in roster],
        policy=policy or view.state.policy,
        log=view.position(),
        info=None,
        now=world.now,
        rng=world.rng,
        **rules,
    )
    return body


def post(
    world: World,
    view: CaseView,
    broker: Broker,
    content: bytes | None = None,
    content_type: str = "note",
) -> bytes:
    sealed = view.seal(
        content_type=content_type, content=content or note(), now=world.now, nonce=world.rng(24)
    )
    broker.append(KIND_UPDATE, sealed.envelope)
    return sealed.envelope
