"""A Hypothesis stateful model of the whole system, checked after every step.

The real broker runs on loopback; real clients in two agencies create a case,
add and remove members, revoke devices, post, replay, forge and reconnect, in
orders Hypothesis chooses.  After every step the invariants must hold: no
non-member reads, no revoked device authenticates, nothing acknowledged is lost
or stored twice, and every honest member's view verifies and shows exactly
what was posted while it was a member.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from caseline.client.client import Client
from caseline.schemas.errors import BrokerRefusal, CaselineError
from caseline.server.keys import STORE
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.support.agencies import Network, start_network

PEOPLE = [("tz-tra", "juma"), ("ke-kra", "bob"), ("tz-tra", "neema")]


async def _server_factory(app: Any) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


class CaseModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory(prefix="caseline-model-")
        self.net: Network = self.run(self._start())
        self.case_id = b""
        self.members: set[str] = set()  # user names in the case now
        self.revoked: set[str] = set()
        self.acked: dict[bytes, str] = {}  # envelope-bearing update id -> text
        self.expected: dict[str, list[str]] = {}  # what each user must be able to read
        self.count = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> Network:
        net = await start_network(_server_factory, Path(self.tmp.name))
        await net.agency("ke-kra", "Kenya Revenue Authority", "KE")
        await net.agency("tz-tra", "Tanzania Revenue Authority", "TZ")
        self.clients: dict[str, Client] = {"alice": await net.device("ke-kra", "alice")}
        for agency, user in PEOPLE:
            self.clients[user] = await net.device(agency, user)
        return net

    def teardown(self) -> None:
        async def stop() -> None:
            await self.net.close()
            await self.net.server.close()

        self.run(stop())
        self.loop.close()
        self.tmp.cleanup()

    @initialize()
    def open_case(self) -> None:
        self.case_id = self.run(self.clients["alice"].create_case(title="Model case"))
        self.members = {"alice"}
        self.expected = {"alice": []}

    # ------------------------------------------------------------------ rules
    @rule(who=st.sampled_from(PEOPLE))
    def add(self, who: tuple[str, str]) -> None:
        agency, user = who
        alice = self.clients["alice"]
        if user in self.members or user in self.revoked:
            with pytest.raises(CaselineError):
                self.run(alice.add_members(self.case_id, [(agency, user, "member")]))
            return
        self.run(alice.add_members(self.case_id, [(agency, user, "member")]))
        self.members.add(user)
        self.expected.setdefault(user, [])

    @precondition(lambda self: len(self.members) > 1)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.members - {"alice"})))
        agency = {u: a for a, u in PEOPLE}[user]
        self.run(self.clients["alice"].remove_members(self.case_id, [(agency, user)]))
        self.members.discard(user)

    @rule(who=st.sampled_from(["alice", *(u for _, u in PEOPLE)]))
    def post(self, who: str) -> None:
        self.count += 1
        text = f"update {self.count} by {who}"
        client = self.clients[who]
        if who not in self.members or who in self.revoked:
            before = self.stored()
            with pytest.raises(CaselineError):
                self.run(client.post_note(self.case_id, text))
            assert self.stored() == before
            return
        posted = self.run(client.post_note(self.case_id, text))
        self.acked[posted.update_id] = text
        for user in self.members:
            self.expected[user].append(text)

    @precondition(lambda self: bool(self.acked))
    @rule()
    def replay(self) -> None:
        """The last acknowledged update posted again, as a retry: the same receipt, nothing new."""
        alice = self.clients["alice"]
        rows = self.run(alice.store.entries(self.case_id))
        last = rows[-1]
        if last.kind != "update":
            return
        sender = next(
            (c for c in self.clients.values() if last.body and c.keys.device_id.hex() in last.body.hex()),
            None,
        )
        if sender is None or sender is not alice:
            return
        before = self.stored()
        receipt = self.run(alice.broker.post_update(self.case_id, last.body))
        assert receipt == last.receipt
        assert self.stored() == before

    @precondition(lambda self: len(self.revoked) < 2)
    @rule(who=st.sampled_from(PEOPLE))
    def revoke(self, who: tuple[str, str]) -> None:
        agency, user = who
        if user in self.revoked:
            return
        self.run(self.net.admins[agency].revoke(self.clients[user].keys.device_id, reason="device-lost"))
        self.run(self.net.publish(agency))
        self.revoked.add(user)
        if user in self.members:  # the revocation drill: the owner takes the device out
            self.run(self.clients["alice"].remove_members(self.case_id, [(agency, user)]))
            self.members.discard(user)

    @rule(who=st.sampled_from([u for _, u in PEOPLE]))
    def reconnect(self, who: str) -> None:
        """A device restarts: its view is rebuilt from its store and must still verify."""
        if who in self.revoked:
            return
        old = self.clients[who]
        self.run(old.close())
        new = self.run(Client.open(old.directory, passphrase="correct horse battery staple"))
        self.net.clients[self.net.clients.index(old)] = self.clients[who] = new

    # ------------------------------------------------------------------ invariants
    def stored(self) -> list[bytes]:
        rows = self.run(self.net.app[STORE].entries(self.case_id, after=0, limit=100_000))
        return [r.body for r in rows]

    @invariant()
    def nothing_acknowledged_is_lost_or_doubled(self) -> None:
        if not self.case_id:
            return
        alice = self.clients["alice"]
        self.run(alice.sync(self.case_id))
        ids = [e.update_id for e in self.run(alice.history(self.case_id)) if e.kind == "update"]
        assert len(ids) == len(set(ids))
        assert set(self.acked) <= set(ids)
        assert len(ids) == len(self.acked)

    @invariant()
    def no_non_member_reads_and_no_revoked_device_logs_in(self) -> None:
        if not self.case_id:
            return
        for user, client in self.clients.items():
            if user in self.revoked:
                with pytest.raises(BrokerRefusal):
                    self.run(client.broker.login())
            elif user not in self.members:
                with pytest.raises(BrokerRefusal) as refused:
                    self.run(client.broker.entries(self.case_id, after=0))
                assert refused.value.status == 404  # as for a case that does not exist

    @invariant()
    def every_member_view_verifies_and_reads_what_it_should(self) -> None:
        if not self.case_id:
            return
        for user in self.members:
            client = self.clients[user]
            self.run(client.sync(self.case_id))
            shown = [
                e.content["text"] for e in self.run(client.history(self.case_id)) if e.readable and e.content
            ]
            assert shown == self.expected[user]


CaseModel.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_case_model = CaseModel.TestCase
