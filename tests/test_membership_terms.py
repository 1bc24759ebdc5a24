"""Time-boxed and jointly approved membership against real brokers and clients (PROTOCOL.md §5.5).

The attacker is an owner (or member) running a modified client: it builds
commits and updates through the protocol core directly, skipping its own
client's checks.  The honest broker refuses what it can see is wrong; the
other members' unmodified clients refuse or withhold it when a compromised
broker serves it anyway.  Terms are set a minute ahead and time is moved by
the clients' clocks (within the five minutes of skew every party allows), so
no test waits for a term to run out.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import pytest
from caseline.client.cli.output import when
from caseline.client.client import Client, wall_clock
from caseline.crypto.caselog import KIND_COMMIT
from caseline.crypto.certs import VerifiedCert
from caseline.crypto.commits import create_commit, sign_approval
from caseline.schemas.errors import (
    EXIT_OK,
    EXIT_USAGE,
    BrokerRefusal,
    ExpiredError,
    NotAllowedError,
    NotPermittedError,
)

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home
from tests.support.hostile import HostileBroker, start_hostile

MINUTE = 60_000
DAY = 24 * 3600 * 1000


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    return (
        ("ke-kra", "Kenya Revenue Authority", "KE"),
        ("tz-tra", "Tanzania Revenue Authority", "TZ"),
        ("ug-ura", "Uganda Revenue Authority", "UG"),
    )


@pytest.fixture
async def hostile(aiohttp_server: Any, net: Network) -> AsyncIterator[tuple[HostileBroker, str]]:
    async with aiohttp.ClientSession() as session:
        yield await start_hostile(aiohttp_server, net, session)


def later(client: Client, ms: int) -> None:
    """Move a client's clock on by ``ms``: as if that much time had passed for it."""
    client.clock = lambda: wall_clock() + ms


async def forge_commit(
    owner: Client,
    case_id: bytes,
    roster: Sequence[tuple[VerifiedCert, str]],
    *,
    now: int,
    terms: Mapping[bytes, int] | None = None,
    approvals: Sequence[bytes] = (),
) -> bytes:
    """A modified owner client: the next commit built by the core, none of the client's checks."""
    await owner.sync(case_id)
    view = await owner.view(case_id)
    assert view.state is not None
    body, _ = create_commit(
        prev=view.state, case_id=case_id, committer=owner.keys, roster=roster, policy=view.state.policy,
        log=view.position(), info=None, now=now, rng=os.urandom, terms=terms, approvals=approvals,
    )  # fmt: skip
    return body


def verified(client: Client, other: Client) -> VerifiedCert:
    return client.trust.verify_cert(other.cert, at=client.clock())


async def roster_of(client: Client, case_id: bytes) -> list[tuple[VerifiedCert, str]]:
    await client.sync(case_id)
    return client._ledger().roster(case_id)


def texts(events: Sequence[Any]) -> list[str]:
    return [e.content["text"] for e in events if e.kind == "update" and e.content and "text" in e.content]


# --------------------------------------------------------------------------- expiry


async def test_expired_member_still_posting_is_withheld_and_the_next_commit_drops_it(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    neema = await net.device("tz-tra", "neema")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    end = wall_clock() + MINUTE
    await alice.add_members(case_id, [("tz-tra", "neema", "member")], expires=end)
    assert {m.author.user_id: m.expires for m in await alice.members(case_id)}["neema"] == end
    await neema.sync(case_id)
    await neema.post_note(case_id, "within the term")

    # Neema's modified client ignores the end of its term.
    later(neema, MINUTE + 1)
    neemas = await neema.view(case_id)
    neemas._check_may_post = lambda *_a, **_k: None  # type: ignore[method-assign]
    await neema.post_note(case_id, "after the term")

    for reader in (alice, juma):
        later(reader, MINUTE + 1)
        await reader.sync(case_id)
        history = await reader.history(case_id)
        assert texts(history) == ["within the term"]
        assert [e.author.user_id for e in history if e.kind == "voided" and e.author] == ["neema"]

    # Honest clients post nothing while she can still read the epoch; the owner is told what to do.
    with pytest.raises(NotPermittedError, match="ask an owner"):
        await juma.post_note(case_id, "juma")
    with pytest.raises(NotPermittedError, match="caseline case renew"):
        await alice.post_note(case_id, "alice")
    # The owner's next commit drops her, whatever it is for.
    await alice.rekey(case_id)
    assert {m.author.user_id for m in await alice.members(case_id)} == {"alice", "juma"}
    await alice.post_note(case_id, "after the drop")
    await juma.sync(case_id)
    assert texts(await juma.history(case_id))[-1] == "after the drop"


async def test_commit_keeping_an_expired_member_is_refused_by_the_broker_and_by_clients(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await net.device("tz-tra", "juma")
    await juma.login(server_url=url)  # juma reads the case through a compromised broker
    await net.device("tz-tra", "neema")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    end = wall_clock() + MINUTE
    await alice.add_members(case_id, [("tz-tra", "neema", "member")], expires=end)
    neema_id = next(m.author.device_id for m in await alice.members(case_id) if m.author.user_id == "neema")
    roster = await roster_of(alice, case_id)
    kept = await forge_commit(alice, case_id, roster, now=end + 1, terms={neema_id: end})
    unlimited = await forge_commit(alice, case_id, roster, now=end + 1)  # the term dropped
    for body in (kept, unlimited):
        with pytest.raises(BrokerRefusal) as refused:
            await alice.broker.commit(case_id, body)
        assert refused.value.problem == "expired"
    await juma.sync(case_id)
    for body in (kept, unlimited):
        broker.rewrite_log = lambda _dev, _cid, log, body=body: [*log, (KIND_COMMIT, body)]
        with pytest.raises(ExpiredError, match="expired without renewing"):
            await juma.sync(case_id)


async def test_renewal_keeps_a_member_past_the_first_term(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[])
    end = wall_clock() + MINUTE
    await alice.add_members(case_id, [("tz-tra", "juma", "member")], expires=end)
    home, profile = cli_home(alice)
    code, out, err = await cli(
        home, "--profile", profile, "case", "renew", case_id.hex(), "tz-tra:juma", "--until", "+30d"
    )
    assert code == EXIT_OK, err
    assert "renewed 1 device(s) of tz-tra:juma until" in out
    code, out, err = await cli(home, "--profile", profile, "--json", "verify", case_id.hex())
    assert code == EXIT_OK, err
    members = {m["member"]: m["expires"] for m in json.loads(out)["members"]}
    assert members["ke-kra:alice"] is None
    assert members["tz-tra:juma"] == when(end + 30 * DAY - MINUTE) or members["tz-tra:juma"] > when(end)
    code, out, err = await cli(home, "--profile", profile, "case", "show", case_id.hex())
    assert code == EXIT_OK, err
    assert f"tz-tra:juma (member, until {when(end)})" in " ".join(out.split())  # the first term's commit
    later(juma, MINUTE + 1)  # past the first term, within the renewed one
    later(alice, MINUTE + 1)
    await juma.sync(case_id)
    await juma.post_note(case_id, "still here")
    await alice.sync(case_id)
    assert texts(await alice.history(case_id)) == ["still here"]


# --------------------------------------------------------------------------- joint approval


async def _approval_case(net: Network) -> tuple[Client, Client, Client, bytes]:
    """KRA's alice and TRA's juma own a case that requires approval; URA's akello is not in it."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    akello = await net.device("ug-ura", "akello")
    case_id = await alice.create_case(
        title="Op", members=[("tz-tra", "juma", "owner")], require_approval=True
    )
    await juma.sync(case_id)
    return alice, juma, akello, case_id


async def test_third_agency_joins_once_each_agency_approves(net: Network) -> None:
    alice, juma, akello, case_id = await _approval_case(net)
    home, profile = cli_home(alice)
    code, _, err = await cli(home, "--profile", profile, "case", "add", case_id.hex(), "ug-ura:akello")
    assert code == EXIT_USAGE, err
    assert "missing: tz-tra" in " ".join(err.split())
    assert f"caseline case approve {case_id.hex()} ug-ura:akello --role member" in " ".join(err.split())
    assert (await alice.view(case_id)).state.epoch == 0  # type: ignore[union-attr]  # nothing committed

    jhome, jprofile = cli_home(juma)
    code, out, err = await cli(
        jhome, "--profile", jprofile, "case", "approve", case_id.hex(), "ug-ura:akello"
    )
    assert code == EXIT_OK, err
    assert "approved 1 device(s) of ug-ura:akello as member" in out
    code, out, err = await cli(home, "--profile", profile, "case", "add", case_id.hex(), "ug-ura:akello")
    assert code == EXIT_OK, err
    assert "added 1 device(s)" in out
    await akello.sync(case_id)
    await akello.post_note(case_id, "akello joined")
    await juma.sync(case_id)
    assert texts(await juma.history(case_id)) == ["akello joined"]


async def test_third_agency_add_without_approval_is_refused_by_the_broker_and_by_clients(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice, juma, akello, case_id = await _approval_case(net)
    await juma.login(server_url=url)
    roster = [*await roster_of(alice, case_id), (verified(alice, akello), "member")]
    body = await forge_commit(alice, case_id, roster, now=alice.clock())
    with pytest.raises(BrokerRefusal, match="missing: tz-tra") as refused:
        await alice.broker.commit(case_id, body)
    assert refused.value.problem == "not-allowed"
    broker.rewrite_log = lambda _dev, _cid, log: [*log, (KIND_COMMIT, body)]
    with pytest.raises(NotAllowedError, match="missing: tz-tra"):
        await juma.sync(case_id)


async def test_approval_replayed_for_another_epoch_device_or_by_a_non_owner_is_refused(net: Network) -> None:
    alice, juma, akello, case_id = await _approval_case(net)
    neema = await net.device("tz-tra", "neema")  # a plain member of TRA: not an owner
    ouma = await net.device("ug-ura", "ouma")
    await alice.add_members(case_id, [("tz-tra", "neema", "member")])  # same agency: no approval needed
    old_state = (await juma.view(case_id)).state
    assert old_state is not None and old_state.epoch == 0
    stale = sign_approval(juma.keys, old_state, device=verified(juma, akello), role="member", expires=None)
    await juma.sync(case_id)
    state = (await juma.view(case_id)).state
    assert state is not None
    other_device = sign_approval(juma.keys, state, device=verified(juma, ouma), role="member", expires=None)
    await neema.sync(case_id)
    neema_state = (await neema.view(case_id)).state
    assert neema_state is not None
    by_member = sign_approval(
        neema.keys, neema_state, device=verified(neema, akello), role="member", expires=None
    )
    roster = [*await roster_of(alice, case_id), (verified(alice, akello), "member")]
    for approval, why in (
        (stale, "another case or epoch"),
        (other_device, "another roster entry"),
        (by_member, "not by an owner"),
    ):
        body = await forge_commit(alice, case_id, roster, now=alice.clock(), approvals=[approval])
        with pytest.raises(BrokerRefusal, match=why):
            await alice.broker.commit(case_id, body)
    # The right approval, for this epoch, by TRA's owner, lets the same commit through.
    good = sign_approval(juma.keys, state, device=verified(juma, akello), role="member", expires=None)
    await alice.broker.commit(
        case_id, await forge_commit(alice, case_id, roster, now=alice.clock(), approvals=[good])
    )
    await akello.sync(case_id)
    assert akello.keys.device_id in (await akello.view(case_id)).state.members  # type: ignore[union-attr]


async def test_a_third_agency_whose_term_ended_is_admitted_again_only_with_approval(net: Network) -> None:
    alice, juma, _, case_id = await _approval_case(net)
    end = wall_clock() + MINUTE
    await juma.approve(case_id, "ug-ura", "akello", expires=end)
    await alice.add_members(case_id, [("ug-ura", "akello", "member")], expires=end)
    later(alice, MINUTE + 1)
    with pytest.raises(NotPermittedError, match="requires approval to admit ug-ura again"):
        await alice.renew(case_id, "ug-ura", "akello", until=end + DAY)
    await alice.rekey(case_id)  # dropped; approved anew, akello can be added again
    assert {m.author.agency_id for m in await alice.members(case_id)} == {"ke-kra", "tz-tra"}
