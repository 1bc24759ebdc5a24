"""A compromised broker attacks honest clients; each attack is detected by name.

The broker here holds the real receipt key (tests/support/hostile.py), so receipts and
heads always check out: only the protocol — signatures, the commit chain, the
sender chains and the gossip in every update — stands between it and the
officers.  Each test performs one attack and asserts the specific error, and
that nothing unverified reached the client's history.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from caseline.client.client import Client
from caseline.crypto import primitives as P
from caseline.crypto.caselog import KIND_COMMIT, KIND_UPDATE
from caseline.crypto.commits import create_commit
from caseline.crypto.keys import SigningKey
from caseline.crypto.ratchet import Chain
from caseline.crypto.updates import ENVELOPE_LABEL, UPDATE_LABEL, envelope_aad
from caseline.schemas.api import Directory
from caseline.schemas.errors import (
    BadSignatureError,
    BrokerForbidden,
    CaselineError,
    ChainError,
    ForkError,
    GapError,
    MalformedError,
    NotAllowedError,
    ReplayError,
    UntrustedError,
)
from caseline.schemas.wire import (
    AuthChallenge,
    CommitMessage,
    Envelope,
    UpdateRecord,
    decode_signed,
    encode_signed,
)

from tests.support.agencies import Network
from tests.support.hostile import HostileBroker, Log, start_hostile


@pytest.fixture
async def hostile(aiohttp_server: Any, net: Network) -> AsyncIterator[tuple[HostileBroker, str]]:
    async with aiohttp.ClientSession() as session:
        yield await start_hostile(aiohttp_server, net, session)


async def victim(net: Network, url: str, agency: str, user: str) -> Client:
    client = await net.device(agency, user)
    await client.login(server_url=url)  # from now on it talks to the compromised broker
    return client


def texts(events: list[Any]) -> list[str]:
    return [e.content["text"] for e in events if e.readable and e.content and "text" in e.content]


async def test_directory_offers_a_device_its_agency_never_certified(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await victim(net, url, "ke-kra", "alice")
    mallory = await net.device("ke-kra", "mallory")  # a real device, but of another user
    broker.rewrite_directory = lambda d: dataclasses.replace(d, certs=(*d.certs, mallory.cert))
    await net.device("tz-tra", "juma")
    with pytest.raises(UntrustedError, match="someone else"):
        await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    assert await alice.store.case_ids() == []


async def test_directory_swaps_a_devices_kem_key(net: Network, hostile: tuple[HostileBroker, str]) -> None:
    broker, url = hostile
    alice = await victim(net, url, "ke-kra", "alice")
    juma = await net.device("tz-tra", "juma")
    other = await net.device("tz-tra", "someone")

    def swap(d: Directory) -> Directory:
        tbs, sig = decode_signed(d.certs[0])
        forged = tbs.replace(juma.keys.kem_public, other.keys.kem_public)
        return dataclasses.replace(d, certs=(encode_signed(forged, sig),))

    broker.rewrite_directory = swap
    with pytest.raises(UntrustedError):  # the only certificate offered no longer verifies
        await alice.create_case(title="Op", members=[("tz-tra", "juma")])


async def test_a_forged_commit_adds_nobody(net: Network, hostile: tuple[HostileBroker, str]) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    mallory = await net.device("ke-kra", "mallory")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    # Juma, a plain member, signs a commit adding mallory; the broker slips it into the log.
    view = await juma.view(case_id)
    await juma.sync(case_id)
    assert view.state is not None
    roster = [
        *juma._ledger().roster(case_id),
        (juma.trust.verify_cert(mallory.cert, at=juma.clock()), "member"),
    ]
    forged, _ = create_commit(
        prev=view.state, case_id=case_id, committer=juma.keys, roster=roster, policy=view.state.policy,
        log=view.position(), info=None, now=juma.clock(), rng=os.urandom,
    )  # fmt: skip
    broker.rewrite_log = lambda _dev, _cid, log: [*log, (KIND_COMMIT, forged)]
    with pytest.raises(NotAllowedError, match="may not change membership"):
        await juma.sync(case_id)
    # An owner's real commit, edited after signing, fails the signature.
    broker.rewrite_log = None
    await alice.add_members(case_id, [("ke-kra", "mallory", "member")])

    def edited(log: Log) -> Log:
        message = CommitMessage.decode(log[1][1])
        at = message.tbs.index(mallory.keys.device_id)
        tbs = message.tbs[:at] + bytes([message.tbs[at] ^ 1]) + message.tbs[at + 1 :]
        return [log[0], (KIND_COMMIT, dataclasses.replace(message, tbs=tbs).encode()), *log[2:]]

    broker.rewrite_log = lambda _dev, _cid, log: edited(log)
    with pytest.raises(BadSignatureError):
        await juma.sync(case_id)
    assert {m.author.user_id for m in await juma.members(case_id)} == {"alice", "juma"}


async def test_a_dropped_update_is_detected(net: Network, hostile: tuple[HostileBroker, str]) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "one")
    await alice.post_note(case_id, "two")
    broker.rewrite_log = lambda _dev, _cid, log: [e for i, e in enumerate(log) if i != 1]  # drop "one"
    with pytest.raises(GapError):
        await juma.sync(case_id)
    assert texts(await juma.history(case_id)) == []


async def test_reordered_duplicated_and_replayed_updates_are_detected(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    for text in ("one", "two", "three"):
        await alice.post_note(case_id, text)
    attacks: dict[str, tuple[Any, type[Exception]]] = {
        "reorder": (lambda log: [log[0], log[2], log[1], log[3]], GapError),
        "duplicate": (lambda log: [log[0], log[1], log[1], log[2], log[3]], ReplayError),
        "replay at a new position": (lambda log: [*log, log[1]], ReplayError),
    }
    for name, (attack, expected) in attacks.items():
        fresh = await Client.open(juma.directory, passphrase="correct horse battery staple")
        try:
            broker.rewrite_log = lambda _dev, _cid, log, attack=attack: attack(log)
            with pytest.raises(expected):
                await fresh.sync(case_id)
            shown = texts(await fresh.history(case_id))
            assert shown == ["one", "two", "three"][: len(shown)], name  # only the honest prefix
        finally:
            await fresh.close()


async def test_a_fork_is_detected_when_the_other_history_is_gossiped(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice, bob = await net.device("ke-kra", "alice"), await net.device("ke-kra", "bob")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma"), ("ke-kra", "bob")])
    await alice.post_note(case_id, "shown to juma only")
    await bob.post_note(case_id, "bob saw alice's note")  # bob's update gossips the log he saw
    # Juma is shown a history without alice's note, and bob's update after it.
    broker.rewrite_log = lambda _dev, _cid, log: [e for i, e in enumerate(log) if i != 1]
    with pytest.raises(GapError):  # bob's update names an update juma never received
        await juma.sync(case_id)
    assert texts(await juma.history(case_id)) == []


async def test_altered_bytes_are_refused(net: Network, hostile: tuple[HostileBroker, str]) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "the original")

    def flip(log: Log, at: int) -> Log:
        kind, body = log[1]
        return [log[0], (kind, body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]), *log[2:]]

    for at in (40, 200, -70, -1):  # header, ciphertext, signature region
        fresh = await Client.open(juma.directory, passphrase="correct horse battery staple")
        try:
            broker.rewrite_log = lambda _dev, _cid, log, at=at: flip(log, at)
            with pytest.raises(CaselineError):
                await fresh.sync(case_id)
        finally:
            await fresh.close()
    assert texts(await juma.history(case_id)) == []


async def test_an_update_from_another_case_is_refused(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_a = await alice.create_case(title="A", members=[("tz-tra", "juma")])
    case_b = await alice.create_case(title="B", members=[("tz-tra", "juma")])
    await alice.post_note(case_a, "for case A only")
    stolen = (await alice.store.entries(case_a))[-1]
    broker.rewrite_log = lambda _dev, cid, log: [*log, (KIND_UPDATE, stolen.body)] if cid == case_b else log
    with pytest.raises(ChainError, match="another case"):
        await juma.sync(case_b)


async def test_a_rollback_or_a_hidden_commit_is_detected(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    await net.device("ke-kra", "bob")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.add_members(case_id, [("ke-kra", "bob", "member")])
    await alice.post_note(case_id, "after bob joined")
    await juma.sync(case_id)
    broker.rewrite_log = lambda _dev, _cid, log: log[:1]  # roll the case back to its genesis
    with pytest.raises(ForkError, match="rollback"):
        await juma.sync(case_id)

    fresh = await net.device("tz-tra", "juma")  # a second device of juma's, new to the case
    await fresh.login(server_url=url)
    await alice.add_members(case_id, [("tz-tra", "juma", "member")])
    broker.rewrite_log = lambda _dev, _cid, log: [e for i, e in enumerate(log) if i != 1]  # hide bob's commit
    with pytest.raises(ChainError):
        await fresh.sync(case_id)


async def test_a_revoked_device_keeps_posting_through_a_complicit_broker(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await victim(net, url, "ke-kra", "alice")
    juma = await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await juma.sync(case_id)
    await net.admins["tz-tra"].revoke(juma.keys.device_id, reason="key-compromise")
    await net.publish("tz-tra")  # the real broker now refuses juma; the proxy does not
    note = b'{"lang":"en","markings":{"handling":"H2","tlp":"AMBER"},"text":"from a stolen key"}'
    sealed = (
        juma._ledger()
        .view(case_id)
        .seal(content_type="note", content=note, now=juma.clock(), nonce=os.urandom(24))
    )
    broker.rewrite_log = lambda _dev, _cid, log: [*log, (KIND_UPDATE, sealed.envelope)]
    await alice.refresh_revocations(force=True)
    assert [(e.kind, e.content) for e in await alice.sync(case_id)] == [("voided", None)]
    assert texts(await alice.history(case_id)) == []


async def test_a_removed_member_sent_later_updates_cannot_read_them(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "while juma is in")
    await juma.sync(case_id)
    await alice.remove_members(case_id, [("tz-tra", "juma")])
    await alice.post_note(case_id, "after juma left")
    broker.serve_anyone = True
    broker.rewrite_log = lambda _dev, _cid, log: log  # the broker keeps feeding juma the case
    events = await juma.sync(case_id)
    assert [e.readable for e in events if e.kind == "update"] == [False]
    assert texts(await juma.history(case_id)) == ["while juma is in"]


async def test_a_member_cannot_be_refused_out_of_its_witness_check(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removed member may be refused the case part of the log check; a member may not.

    Otherwise a broker withholding cosignatures would answer 403 to the case query and
    no entry would ever be counted pending (so no alarm): the refusal ends the command.
    """
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", witnessed=False)
    real = alice.broker.log_witnessed

    async def refuse(*, since: int, case_id: bytes | None = None) -> Any:
        if case_id is not None:
            raise BrokerForbidden("device is not a member of the case", status=403)
        return await real(since=since)

    monkeypatch.setattr(alice.broker, "log_witnessed", refuse)
    with pytest.raises(BrokerForbidden):
        await alice.sync(case_id)


async def test_signatures_and_receipts_cannot_stand_in_for_each_other(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    alice = await net.device("ke-kra", "alice")
    juma = await victim(net, url, "tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "hello")
    log = [(e.kind, e.body) for e in await alice.store.entries(case_id)]
    commit_sig = CommitMessage.decode(log[0][1]).signature
    tbs, _ = decode_signed(log[1][1])
    swapped = encode_signed(tbs, commit_sig)  # the genesis commit's signature on the envelope
    broker.rewrite_log = lambda _dev, _cid, real: [real[0], (KIND_UPDATE, swapped)]
    with pytest.raises(BadSignatureError):
        await juma.sync(case_id)
    broker.rewrite_log = lambda _dev, _cid, real: real
    broker.receipt_key = SigningKey(os.urandom(32))  # receipts from another broker's key
    with pytest.raises(BadSignatureError):
        await juma.sync(case_id)


async def test_a_challenge_for_another_broker_is_not_signed(
    net: Network, hostile: tuple[HostileBroker, str]
) -> None:
    broker, url = hostile
    juma = await victim(net, url, "tz-tra", "juma")

    def other_broker(challenge: bytes) -> bytes:
        parsed = AuthChallenge.decode(challenge)
        return dataclasses.replace(parsed, server_key=os.urandom(32)).encode()

    broker.rewrite_challenge = other_broker
    juma.broker._token = None
    with pytest.raises(MalformedError, match="not for this device and broker"):
        await juma.broker.login()


async def test_a_bot_bypassing_its_scopes_is_refused_by_readers(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert", "read"))
    case_id = await alice.create_case(title="Op", members=[("ke-kra", "scanner")])
    view = await bot.view(case_id)
    await bot.sync(case_id)
    assert view.state is not None
    # A tampered bot skips its own scope check and seals a note by hand; the
    # broker cannot see content types and stores it.
    note = b'{"lang":"en","markings":{"handling":"H2","tlp":"AMBER"},"text":"not my scope"}'
    record = UpdateRecord(
        case_id=case_id,
        epoch=view.state.epoch,
        sender=bot.keys.device_id,
        counter=0,
        prev_own=b"",
        seen=(),
        log=view.position(),
        commit_hash=view.state.commit_hash,
        content_type="note",
        content=note,
        time=bot.clock(),
    )
    rtbs = record.encode()
    chain = Chain.start(
        epoch_secret=view._epoch_secret or b"",
        case_id=case_id,
        epoch=view.state.epoch,
        device_id=bot.keys.device_id,
    )
    nonce = os.urandom(24)
    plain = encode_signed(rtbs, bot.keys.sign(UPDATE_LABEL, rtbs))
    ct = P.xchacha_seal(
        chain.take(0), nonce, plain, envelope_aad(case_id, view.state.epoch, bot.keys.device_id, 0)
    )
    env = Envelope(
        case_id=case_id,
        epoch=view.state.epoch,
        sender=bot.keys.device_id,
        counter=0,
        nonce=nonce,
        ciphertext=ct,
    )
    etbs = env.encode()
    await bot.broker.post_update(case_id, encode_signed(etbs, bot.keys.sign(ENVELOPE_LABEL, etbs)))
    with pytest.raises(NotAllowedError, match="content type"):
        await alice.sync(case_id)
