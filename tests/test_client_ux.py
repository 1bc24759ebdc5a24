"""Issue 13's library behaviour behind the CLI, against a real broker on loopback.

Replies to updates that exist (item 1), a post its own agency voided (item 7),
bot scopes and re-issued certificates (item 9).  Real agencies, real devices,
real aiohttp broker (``tests.support.agencies``); nothing here is a stub.
"""

from __future__ import annotations

import datetime
import logging
import secrets
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from caseline.client.client import Client, RepinIncompleteError, wall_clock
from caseline.client.transport import BrokerConnection
from caseline.crypto.certs import issue_device_cert
from caseline.crypto.keys import DeviceKeys
from caseline.schemas.api import Directory
from caseline.schemas.errors import (
    EXIT_UNTRUSTED,
    EXIT_USAGE,
    BrokerForbidden,
    BrokerRefusal,
    CaselineError,
    NotPermittedError,
    PostedAfterRevocationError,
    UnknownError,
    UntrustedError,
    UsageError,
)
from caseline.schemas.wire import DeviceCert, decode_signed
from caseline.server.keys import STORE

from tests.support.agencies import PASSPHRASE, Network
from tests.support.hostile import refusing_posts

SEIZURE: dict[str, Any] = {
    "occurred_at": "2026-11-20T08:00:00Z",
    "place": {"name": "Mombasa port", "country": "KE"},
    "goods": [{"description": "heroin in rice bags", "quantity": 12, "unit": "kg"}],
}


async def stored_updates(net: Network, case_id: bytes) -> int:
    rows = await net.app[STORE].entries(case_id, after=0, limit=10_000)
    return sum(1 for r in rows if r.kind == "update")


# --------------------------------------------------------------------------- item 1: replies


async def test_a_reply_to_an_update_that_does_not_exist_is_refused_and_uses_up_nothing(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op. Reply", members=[("tz-tra", "juma")])
    note = await alice.post_note(case_id, "container held at berth 11")
    nowhere = secrets.token_bytes(32)

    with pytest.raises(UnknownError) as refused:
        await juma.post_reply(case_id, in_reply_to=nowhere, text="which one?")
    assert str(refused.value) == (
        f"in_reply_to names update {nowhere.hex()[:16]}…, which is not an update of this case you can"
        " see: give an id that `caseline case show CASE` lists"
    )
    assert refused.value.exit_code == EXIT_USAGE
    with pytest.raises(UnknownError, match=r"^refs names update"):
        await juma.post_ack(case_id, of=note.update_id, refs=[note.update_id.hex(), nowhere.hex()])
    with pytest.raises(UnknownError, match=r"^of names update"):
        await juma.post_ack(case_id, of=nowhere)
    assert await stored_updates(net, case_id) == 1, "nothing was sent"
    assert not await juma.store.outbox(case_id), "nothing was kept to send later"

    # Nothing was used up: juma's next update takes the very position, and alice verifies it.
    reply = await juma.post_reply(case_id, in_reply_to=note.update_id, text="seen, sending a team")
    ack = await juma.post_ack(case_id, of=note.update_id, refs=[reply.update_id.hex()])
    events = await alice.sync(case_id)
    assert [(e.content_type, e.update_id) for e in events] == [
        ("reply", reply.update_id),
        ("ack", ack.update_id),
    ]
    assert events[0].content and events[0].content["in_reply_to"] == note.update_id.hex()


async def test_a_receiver_accepts_a_reply_to_an_update_it_cannot_see(net: Network) -> None:
    """Only the sender checks references: a member who joined later lacks history others hold."""
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op. Later")
    before = await alice.post_note(case_id, "before juma joined")
    juma = await net.device("tz-tra", "juma")
    await alice.add_members(case_id, [("tz-tra", "juma", "member")])  # history not shared
    reply = await alice.post_reply(case_id, in_reply_to=before.update_id, text="as noted before")
    events = [e for e in await juma.sync(case_id) if e.kind == "update"]
    assert [(e.readable, e.update_id) for e in events] == [(False, None), (True, reply.update_id)]
    # juma cannot name what it never saw, so it cannot reply to it either.
    with pytest.raises(UnknownError):
        await juma.post_reply(case_id, in_reply_to=before.update_id, text="what note?")


async def test_a_newcomer_given_the_history_can_reply_to_it(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op. Shared")
    before = await alice.post_note(case_id, "before juma joined")
    # The case is H2: a member of another agency added later gets it only once it is released.
    await alice.release(case_id, before.update_id, purpose="disseminate")
    juma = await net.device("tz-tra", "juma")
    await alice.add_members(case_id, [("tz-tra", "juma", "member")], share_history=True)
    await juma.sync(case_id)
    reply = await juma.post_reply(case_id, in_reply_to=before.update_id, text="read it, thanks")
    events = await alice.sync(case_id)
    assert [e.update_id for e in events] == [reply.update_id]
    assert events[0].violation is None


# --------------------------------------------------------------------------- item 7: after revocation


async def test_a_post_accepted_before_its_revocation_was_published_says_so_at_once(net: Network) -> None:
    """The agency revokes alice's device and publishes while her post is on its way back.

    The broker accepts the post (it does not hold the list yet); the client
    learns of the list right after the receipt and says the update is void.
    """
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op. Late", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "an honest note")
    assert (await alice.identity()).revoked_at is None
    await alice.close()
    net.clients.remove(alice)
    await net.admins["ke-kra"].revoke(alice.keys.device_id, reason="device-lost")  # signed, not published
    after_revoking = wall_clock()

    published: list[int] = []

    async def on_request_end(_: object, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        if params.method == "POST" and params.url.path.endswith("/updates") and params.response.status == 201:
            await net.publish("ke-kra")  # the broker answered: the list lands before alice looks
            published.append(params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        again = await Client.open(alice.directory, passphrase=PASSPHRASE, session=session)
        try:
            with pytest.raises(PostedAfterRevocationError) as voided:
                await again.post_note(case_id, "written after the phone was lost")
            assert published == [201], "the broker accepted the post"
            entry_at = again.own_revocation()
            assert entry_at is not None and entry_at <= after_revoking
            when = datetime.datetime.fromtimestamp(entry_at / 1000, tz=datetime.UTC)
            assert str(voided.value) == (
                f"posted, but your device was revoked at {when:%Y-%m-%d %H:%M:%SZ};"
                " partners will see it voided"
            )
            assert voided.value.exit_code == EXIT_UNTRUSTED
            assert (voided.value.seq, voided.value.revoked_at) == (2, entry_at)
            assert not await again.store.outbox(case_id), "delivered: nothing left to resend"
            assert (await again.identity()).revoked_at == entry_at  # whoami shows it
        finally:
            await again.close()
    # Partners see exactly that: the honest note, then a voided update from alice's device.
    await juma.sync(case_id)
    events = [e for e in await juma.history(case_id) if e.kind != "commit"]
    assert [e.kind for e in events] == ["update", "voided"]
    assert events[1].author is not None and events[1].author.device_id == alice.keys.device_id


async def test_a_junk_revocation_list_after_a_stored_post_does_not_report_the_post_as_failed(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    """The post is stored and out of the outbox; the check after it fails (a broker answering junk).

    Reporting the post as failed would have the officer post it again: a second copy.  The
    check's failure is logged and the post returns as posted.
    """
    alice = await net.device("ke-kra", "alice")
    await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op. Junk list", members=[("tz-tra", "juma")])
    await alice.close()
    net.clients.remove(alice)

    async def on_request_end(_: object, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        if params.method == "POST" and params.url.path.endswith("/updates") and params.response.status == 201:
            await net.app[STORE].put_revocation_list("ke-kra", 99, b"\x93junk")  # what the broker serves next

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        again = await Client.open(alice.directory, passphrase=PASSPHRASE, session=session)
        try:
            with caplog.at_level(logging.WARNING, logger="caseline.client"):
                posted = await again.post_note(case_id, "stored once")
            assert not await again.store.outbox(case_id)
        finally:
            await again.close()
    assert "could not check this device's revocation" in caplog.text
    assert await stored_updates(net, case_id) == 1  # one copy, and the officer was told it is posted
    assert posted.update_id is not None


async def test_lists_taken_from_directories_drop_their_views_and_are_kept_even_if_a_later_one_is_junk(
    net: Network,
) -> None:
    """Several directories' lists are adopted at once (``repin``); the last is junk.

    The first list voids an update juma's view holds: the view must go even
    though the adoption stopped part-way, and the list must be kept in the
    profile, as a list fetched on its own is.
    """
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    bob = await net.device("ke-kra", "bob")
    case_id = await alice.create_case(
        title="Op. Partial", members=[("tz-tra", "juma"), ("ke-kra", "bob")], witnessed=False
    )
    await net.admins["ke-kra"].revoke(bob.keys.device_id, reason="device-lost")  # signed, not published
    late = await bob.post_note(case_id, "posted after the phone was lost")
    await juma.sync(case_id)
    assert juma.ledger is not None and case_id in juma.ledger.views
    await net.publish("ke-kra")
    crl = await net.app[STORE].get_revocation_list("ke-kra")
    assert crl is not None
    good = Directory(agency_id="ke-kra", user_id="bob", certs=(), revocations=crl)
    junk = Directory(agency_id="tz-tra", user_id="juma", certs=(), revocations=b"\x00junk")
    with pytest.raises(CaselineError):
        await juma._adopt_lists([good, junk])
    assert juma.ledger is not None and case_id not in juma.ledger.views  # dropped, to be re-verified
    assert crl in await juma.store.crls()  # kept: the next run starts from it
    kinds = {e.update_id: e.kind for e in await juma.history(case_id)}
    assert kinds[late.update_id] == "voided"


async def test_an_earlier_runs_update_found_voided_names_itself_and_the_new_one_is_not_sent(
    net: Network, aiohttp_server: Any
) -> None:
    """An update left in the outbox by an earlier run goes first, and turns out voided.

    The error must say which update it concerns, and that the content given
    now was not sent (this device is revoked: it would be voided too).
    """
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op. Outbox", witnessed=False)
    await alice.close()
    net.clients.remove(alice)
    async with aiohttp.ClientSession() as upstream:
        proxy = await aiohttp_server(refusing_posts(upstream, net.url))
        cut_off = await Client.open(alice.directory, passphrase=PASSPHRASE)
        try:
            await cut_off.login(server_url=str(proxy.make_url("")))
            note = {"markings": {"handling": "H2", "tlp": "AMBER"}, "lang": "en", "text": "sealed before"}
            with pytest.raises(BrokerRefusal):
                await cut_off.post(case_id, "note", note, tries=1)
            [left] = await cut_off.store.outbox(case_id)
        finally:
            await cut_off.close()
    await net.admins["ke-kra"].revoke(alice.keys.device_id, reason="device-lost")  # signed, not published

    async def on_request_end(_: object, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        if params.method == "POST" and params.url.path.endswith("/updates") and params.response.status == 201:
            await net.publish("ke-kra")

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        again = await Client.open(alice.directory, passphrase=PASSPHRASE, session=session)
        try:
            await again.login(server_url=net.url)
            with pytest.raises(PostedAfterRevocationError) as voided:
                await again.post_note(case_id, "typed after the phone was lost")
            assert voided.value.update_id == left.update_id and voided.value.earlier
            message = str(voided.value)
            assert message.startswith(f"update {left.update_id.hex()[:8]}, left unsent by an earlier run,")
            assert message.endswith("partners will see it voided; this update was not sent")
            assert await again.store.outbox(case_id) == []
        finally:
            await again.close()
    assert await stored_updates(net, case_id) == 1  # the earlier one only


# --------------------------------------------------------------------------- item 9: scopes


async def test_a_scope_that_names_no_content_type_is_refused_with_the_valid_ones(net: Network) -> None:
    admin = net.admins["ke-kra"]
    bot = await Client.create(
        net.root / "bot",
        agency_id="ke-kra",
        user_id="scanner",
        server_url=net.url,
        passphrase=PASSPHRASE,
        kdf="interactive",
    )
    net.clients.append(bot)
    request = await bot.enrolment_request()
    with pytest.raises(UsageError) as refused:
        await admin.issue(request, role="bot", scopes=["alerts"])
    assert str(refused.value) == (
        "'alerts' is not a scope: the valid scopes are"
        " ack, alert, approval, note, release, release-request, reminder, reply, request, seizure,"
        " status, read"
    )
    with pytest.raises(UsageError, match=r"^a bot needs at least one scope: one or more of ack, alert"):
        await admin.issue(request, role="bot")
    with pytest.raises(UsageError, match=r"^only a bot certificate takes scopes"):
        await admin.issue(request, role="officer", scopes=["alert"])
    assert await admin.issued() == [], "nothing was signed"

    await admin.issue(request, role="bot", scopes=["alert", "read"])
    await admin.revoke(bot.keys.device_id, reason="superseded")
    [row] = await admin.issued()
    assert (row.user_id, row.role, row.scopes, row.revocation_reason) == (
        "scanner",
        "bot",
        ("alert", "read"),
        "superseded",
    )
    assert row.device_id == bot.keys.device_id and row.revoked_at is not None
    assert row.not_before <= row.revoked_at < row.not_after and row.published is False


# --------------------------------------------------------------------------- item 9: re-issued certificates


async def reissue(net: Network, client: Client, scopes: tuple[str, ...]) -> bytes:
    """The bot's agency re-issues its certificate from the same request, publishes it, and the bot logs in."""
    cert = await net.admins["ke-kra"].issue(await client.enrolment_request(), role="bot", scopes=scopes)
    await net.publish("ke-kra")
    await client.login(cert=cert)
    return cert


async def test_a_reissued_certificate_takes_effect_once_an_owner_repins(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    # ``read``: the library syncs before it posts (a bot without it posts over the raw API only).
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert", "read"))
    case_id = await alice.create_case(title="Op. Scopes", members=[("tz-tra", "juma"), ("ke-kra", "scanner")])
    other = await alice.create_case(title="Op. Without the bot", members=[("tz-tra", "juma")])
    with pytest.raises(NotPermittedError, match="does not allow this content type"):
        await bot.post_seizure(case_id, **SEIZURE)

    await reissue(net, bot, ("alert", "read", "seizure"))
    assert (await bot.identity()).scopes == ("alert", "read", "seizure")
    with pytest.raises(NotPermittedError) as stale:  # the case still pins the old certificate
        await bot.post_seizure(case_id, **SEIZURE)
    assert str(stale.value) == (
        "your certificate was re-issued, but this case still holds the old one, which does not allow"
        f" seizure: ask an owner of the case to run `caseline case repin {case_id.hex()}`"
    )
    assert await stored_updates(net, case_id) == 0

    with pytest.raises(NotPermittedError, match="only an owner"):
        await juma.repin(case_id)
    assert await juma.repin() == []  # juma owns no case: nothing to do, nothing refused
    epoch = (await juma.view(case_id)).state.epoch  # type: ignore[union-attr]

    [done] = await alice.repin()  # every case alice owns; only the bot's changed
    assert (done.case_id, done.devices) == (case_id, (bot.keys.device_id,))
    assert await alice.repin() == [], "nothing changed since: no commit"
    assert (await alice.view(other)).state.epoch == 0  # type: ignore[union-attr]

    posted = await bot.post_seizure(case_id, **SEIZURE)
    events = await juma.sync(case_id)
    assert [e.kind for e in events] == ["commit", "update"]
    assert events[0].epoch == epoch + 1
    assert (events[1].content_type, events[1].update_id) == ("seizure", posted.update_id)
    assert events[1].author is not None and events[1].author.name == "ke-kra:scanner"
    members = {m.author.name: m.role for m in await juma.members(case_id)}
    assert members == {"ke-kra:alice": "owner", "tz-tra:juma": "member", "ke-kra:scanner": "member"}


async def test_a_reissued_certificate_with_other_keys_is_refused(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert",))
    case_id = await alice.create_case(title="Op. Keys", members=[("tz-tra", "juma"), ("ke-kra", "scanner")])
    # The agency signs the bot's signing key with someone else's encryption key (a mistake, or worse).
    pinned = DeviceCert.decode(decode_signed(bot.cert)[0])
    admin = net.admins["ke-kra"]
    now = wall_clock()
    forged = issue_device_cert(
        admin.root,
        user_id="scanner",
        role="bot",
        scopes=("alert", "seizure"),
        sign_key=pinned.sign_key,
        kem_key=DeviceKeys.generate(secrets.token_bytes).kem_public,
        not_before=max(now, pinned.not_before + 1),
        not_after=now + 86_400_000,
        serial=await admin.store.next_serial(),
    )
    broker = BrokerConnection(net.url, keys=None, server_key=None)
    try:
        await broker.register(forged)
    finally:
        await broker.close()
    before = (await alice.view(case_id)).count
    with pytest.raises(UntrustedError, match="binds other keys than the case holds: not re-pinned"):
        await alice.repin(case_id)
    await juma.sync(case_id)
    assert (await juma.view(case_id)).count == before, "no commit was made"


async def test_repin_over_every_case_goes_on_past_a_case_that_fails_and_names_it(net: Network) -> None:
    """One case cannot take the re-issued certificate (its holder owns it, and is now a bot);
    the other case still moves onto it, and the failure names its case."""
    alice = await net.device("ke-kra", "alice")
    bob = await net.device("ke-kra", "bob")
    owned = await alice.create_case(title="Op. Owned", members=[("ke-kra", "bob")], witnessed=False)
    await alice.set_role(owned, "ke-kra", "bob", "owner")
    member = await alice.create_case(title="Op. Member", members=[("ke-kra", "bob")], witnessed=False)
    await reissue(net, bob, ("alert", "read"))  # bob's device, now a bot
    with pytest.raises(RepinIncompleteError) as partly:
        await alice.repin()
    [(failed_case, why)] = partly.value.failed
    assert failed_case == owned and isinstance(why, NotPermittedError)
    assert [(d.case_id, d.devices) for d in partly.value.done] == [(member, (bob.keys.device_id,))]
    assert partly.value.exit_code == EXIT_USAGE
    assert f"case {owned.hex()[:8]}: ke-kra:bob was re-issued as a bot" in str(partly.value)
    [change] = partly.value.done[0].changes
    assert (change.old.role, change.new.role, change.new.scopes) == ("officer", "bot", ("alert", "read"))
    members = {m.author.device_id: m for m in await alice.members(member)}
    assert members[bob.keys.device_id].author.device_role == "bot"  # committed, though the other failed


async def test_a_bot_given_read_reads_once_an_owner_repins(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert",))
    case_id = await alice.create_case(title="Op. Read", members=[("ke-kra", "scanner")])
    note = await alice.post_note(case_id, "for the bot to read")
    with pytest.raises(BrokerForbidden, match="does not allow reading"):
        await bot.sync(case_id)
    await reissue(net, bot, ("alert", "read"))
    with pytest.raises(NotPermittedError) as stale:  # the broker still judges by the case's pin
        await bot.sync(case_id)
    assert str(stale.value) == (
        "your certificate was re-issued, but this case still holds the old one, which does not allow"
        f" reading: ask an owner of the case to run `caseline case repin {case_id.hex()}`"
    )
    await alice.repin(case_id)
    events = await bot.sync(case_id)
    assert note.update_id in [e.update_id for e in events]
