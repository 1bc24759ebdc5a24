"""Test helpers for the broker: a real aiohttp app on loopback and devices that use it.

``Officer`` drives the broker exactly as a client does: challenge–response
login, then msgpack bodies with a bearer token.  It holds a real ``CaseView``
for each case so that what the broker returns is verified by the real core.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from caseline.crypto.auth import answer_challenge
from caseline.crypto.caselog import CaseView
from caseline.crypto.commits import create_commit, log_anchor
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import ChallengeRequest, EntryPage, Session
from caseline.schemas.wire import LogPosition, Policy
from caseline.server.keys import CORE, STORE
from caseline.server.store import AgencyRow

from tests.support.world import Device, World, note

MSGPACK = {"Content-Type": "application/msgpack"}


async def register_agencies(client: TestClient, world: World) -> None:
    """What the operator does with ``caseline-server agency add``."""
    app = client.app
    assert app is not None
    for agency_id, root in world.roots.items():
        await app[STORE].add_agency(AgencyRow(agency_id, agency_id.upper(), "KE", root.public_key, world.now))
        app[CORE].trust.pin(agency_id, root.public_key)


@dataclasses.dataclass
class Officer:
    #: aiohttp's TestClient in most tests; a session bound to a URL against a real process.
    client: Any
    world: World
    device: Device
    server_key: SigningKey
    token: str = ""
    views: dict[bytes, CaseView] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> bytes:
        return self.device.id

    def headers(self) -> dict[str, str]:
        return {**MSGPACK, "Authorization": f"Bearer {self.token}"}

    async def register(self) -> None:
        r = await self.client.post("/v1/devices", data=self.device.cert, headers=MSGPACK)
        assert r.status == 204, await r.text()

    async def login(self) -> None:
        r = await self.client.post(
            "/v1/auth/challenge", data=ChallengeRequest(device_id=self.id).encode(), headers=MSGPACK
        )
        assert r.status == 200, await r.text()
        challenge = await r.read()
        response = answer_challenge(self.device.keys, challenge, server_key=self.server_key.public_key)
        r = await self.client.post("/v1/auth/session", data=response, headers=MSGPACK)
        assert r.status == 200, await r.text()
        self.token = Session.decode(await r.read()).token

    async def enrol(self) -> Officer:
        await self.register()
        await self.login()
        return self

    def policy(self, **kw: Any) -> Policy:
        return self.world.policy(receipt_key=self.server_key.public_key, **kw)

    async def create_case(self, members: list[tuple[Device, str]], **policy: Any) -> bytes:
        trust = self.world.trust()
        case_id = self.world.rng(16)
        roster = [(trust.verify_cert(self.device.cert, at=self.world.now), "owner")]
        roster += [(trust.verify_cert(d.cert, at=self.world.now), role) for d, role in members]
        body, _ = create_commit(
            prev=None,
            case_id=case_id,
            committer=self.device.keys,
            roster=roster,
            policy=self.policy(**policy),
            log=LogPosition(count=0, head=log_anchor(case_id)),
            info=None,
            now=self.world.now,
            rng=self.world.rng,
        )
        r = await self.client.post("/v1/cases", data=body, headers=self.headers())
        assert r.status == 201, await r.text()
        await self.sync(case_id, at_least=1)
        return case_id

    async def change(self, case_id: bytes, roster: list[tuple[Device, str]]) -> ClientResponse:
        view = self.views[case_id]
        assert view.state is not None
        trust = self.world.trust()
        body, _ = create_commit(
            prev=view.state,
            case_id=case_id,
            committer=self.device.keys,
            roster=[(trust.verify_cert(d.cert, at=self.world.now), role) for d, role in roster],
            policy=view.state.policy,
            log=view.position(),
            info=None,
            now=self.world.now,
            rng=self.world.rng,
        )
        return await self.client.post(f"/v1/cases/{case_id.hex()}/commits", data=body, headers=self.headers())

    def seal(self, case_id: bytes, text: str = "hello") -> bytes:
        view = self.views[case_id]
        return view.seal(
            content_type="note", content=note(text), now=self.world.now, nonce=self.world.rng(24)
        ).envelope

    async def post(self, case_id: bytes, envelope: bytes) -> ClientResponse:
        return await self.client.post(
            f"/v1/cases/{case_id.hex()}/updates", data=envelope, headers=self.headers()
        )

    async def say(self, case_id: bytes, text: str = "hello") -> bytes:
        r = await self.post(case_id, self.seal(case_id, text))
        assert r.status == 201, await r.text()
        return await r.read()

    async def entries(self, case_id: bytes, after: int = 0) -> EntryPage:
        r = await self.client.get(f"/v1/cases/{case_id.hex()}/entries?after={after}", headers=self.headers())
        assert r.status == 200, await r.text()
        return EntryPage.decode(await r.read())

    async def sync(self, case_id: bytes, *, at_least: int = 0) -> CaseView:
        """Fetch and verify everything new, with the real core.

        ``at_least``: go on asking until that many entries are verified.  A page
        states only what the broker can already read back, and a broker that
        acknowledges before it commits (``bench/chaos.py``'s fault) can answer
        before its entries are readable.
        """
        view = self.views.setdefault(case_id, CaseView(trust=self.world.trust(), me=self.device.keys))
        while True:
            page = await self.entries(case_id, after=view.count)
            assert page.entries or view.count >= page.count, "an empty page below the broker's count"
            for e in page.entries:
                view.apply(seq=e.seq, kind=e.kind, body=e.body, now=self.world.now, receipt=e.receipt)
            if view.count >= max(page.count, at_least):
                return view
