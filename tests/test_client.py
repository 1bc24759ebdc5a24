"""The client library against a real broker on loopback: the behaviours issue 4 names."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from caseline.client.client import Client, verify_bundle, wall_clock
from caseline.client.keystore import DeviceSecrets, read_key_file, write_key_file
from caseline.crypto import merkle, note, tlog
from caseline.crypto.certs import issue_witness_list, make_enrolment_request, open_enrolment_request
from caseline.crypto.keys import DeviceKeys, SigningKey
from caseline.schemas.errors import (
    BadSignatureError,
    BrokerRefusal,
    BrokerUnknownCase,
    InvalidContentError,
    NotPermittedError,
    ProfileError,
    UnknownError,
    UntrustedError,
    UsageError,
)
from caseline.schemas.wire import EntryLeaf, Witness
from caseline.server.keys import HUB, STORE
from caseline.server.stream import CLOSE_SLOW

from tests.support.agencies import PASSPHRASE, Network
from tests.support.hostile import forward, refusing_posts


async def stored_updates(net: Network, case_id: bytes) -> list[bytes]:
    rows = await net.app[STORE].entries(case_id, after=0, limit=10_000)
    return [r.body for r in rows if r.kind == "update"]


# --------------------------------------------------------------------------- membership


async def test_a_removed_member_cannot_read_later_updates(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await alice.post_note(case_id, "before removal")
    await juma.sync(case_id)
    await alice.remove_members(case_id, [("tz-tra", "juma")])
    await alice.post_note(case_id, "after removal")

    with pytest.raises(BrokerUnknownCase) as refused:  # the broker no longer serves the case to juma
        await juma.sync(case_id)
    assert refused.value.status == 404
    # Even handed the entries directly, juma's keys open nothing after its removal.
    for row in await net.app[STORE].entries(case_id, after=(await juma.view(case_id)).count, limit=100):
        events = juma._ledger().apply(
            case_id, seq=row.seq, kind=row.kind, body=row.body, receipt=row.receipt, now=juma.clock()
        )
        assert all(not e.readable for e in events if e.kind == "update")
    readable = [e.content for e in await juma.history(case_id) if e.readable and e.content]
    assert [c["text"] for c in readable] == ["before removal"]


async def test_a_lost_device_is_removed_and_its_user_stays(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    phone, laptop = await net.device("tz-tra", "juma"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    assert len(await alice.members(case_id)) == 3
    await alice.remove_devices(case_id, [phone.keys.device_id])
    await alice.post_note(case_id, "after the phone was lost")
    await laptop.sync(case_id)
    assert [e.content["text"] for e in await laptop.history(case_id) if e.content] == [
        "after the phone was lost"
    ]
    assert {m.author.device_id for m in await alice.members(case_id)} == {
        alice.keys.device_id,
        laptop.keys.device_id,
    }


async def test_members_come_from_pinned_roots_only(net: Network) -> None:
    alice = await net.device("ke-kra", "alice", pin_all=False)  # has not pinned tz-tra
    await net.device("tz-tra", "juma")
    with pytest.raises(UnknownError, match="tz-tra is not pinned: caseline trust add tz-tra"):
        await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    assert await alice.cases() == []  # nothing was sent


async def test_a_view_that_fails_part_way_is_not_served_later_as_verified(net: Network) -> None:
    """A replay that stops at a bad entry must leave nothing behind: asked again, the view
    fails again rather than answer with the entries before the bad one as if all was well."""
    juma, neema = await net.device("tz-tra", "juma"), await net.device("tz-tra", "neema")
    await net.device("ke-kra", "alice")
    case_id = await juma.create_case(title="Op", members=[("tz-tra", "neema")])
    await juma.add_members(case_id, [("ke-kra", "alice", "member")])
    await neema.sync(case_id)
    await neema.trust_remove("ke-kra")  # the commit that added alice no longer verifies here
    for _ in range(2):
        with pytest.raises(UntrustedError):
            await neema.view(case_id)


async def test_only_owners_change_members_and_roles_change(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    await net.device("ke-kra", "bob")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    with pytest.raises(NotPermittedError):
        await juma.add_members(case_id, [("ke-kra", "bob", "member")])
    await alice.set_role(case_id, "tz-tra", "juma", "owner")
    await juma.add_members(case_id, [("ke-kra", "bob", "observer")])
    await alice.sync(case_id)
    roles = {m.author.name: m.role for m in await alice.members(case_id)}
    assert roles == {"ke-kra:alice": "owner", "tz-tra:juma": "owner", "ke-kra:bob": "observer"}


async def test_history_is_shared_with_a_new_member_only_when_asked(net: Network) -> None:
    alice, juma, bob = (
        await net.device("ke-kra", "alice"),
        await net.device("tz-tra", "juma"),
        await net.device("ke-kra", "bob"),
    )
    case_id = await alice.create_case(title="Op")
    await alice.post_note(case_id, "early lead")
    await alice.add_members(case_id, [("tz-tra", "juma", "member")])
    await alice.add_members(case_id, [("ke-kra", "bob", "member")], share_history=True)
    await juma.sync(case_id)
    await bob.sync(case_id)
    juma_texts = [e.content["text"] for e in await juma.history(case_id) if e.readable and e.content]
    bob_texts = [e.content["text"] for e in await bob.history(case_id) if e.readable and e.content]
    assert juma_texts == []
    assert bob_texts == ["early lead"]


# --------------------------------------------------------------------------- revocation and bots


async def test_a_revoked_device_is_refused_and_its_updates_rejected(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    await juma.post_note(case_id, "posted while trusted")
    admin = net.admins["tz-tra"]
    await admin.revoke(juma.keys.device_id, reason="device-lost")
    # The broker has not heard yet, so it still accepts an update dated after the
    # revocation; alice must refuse it once she learns of the revocation.
    await juma.post_note(case_id, "posted after the revocation")
    await net.publish("tz-tra")
    fresh = await Client.open(alice.directory, passphrase=PASSPHRASE)
    try:
        events = await fresh.sync(case_id)
        assert [(e.kind, e.author and e.author.user_id) for e in events[-2:]] == [
            ("update", "juma"),
            ("voided", "juma"),
        ]
        assert [e.content["text"] for e in await fresh.history(case_id) if e.content] == [
            "posted while trusted"
        ]
        await fresh.post_note(case_id, "the case goes on")
    finally:
        await fresh.close()
    before = await stored_updates(net, case_id)
    with pytest.raises(BrokerRefusal) as refused:  # now the broker refuses juma outright
        await juma.post_note(case_id, "and again")
    assert refused.value.problem == "revoked"  # its session died; a new login is refused
    assert await stored_updates(net, case_id) == before


async def test_a_backdated_revocation_voids_what_a_stolen_key_signed_since(net: Network) -> None:
    """The drill's last step: revoke from when the key was last known safe, not from now."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    safe = await juma.post_note(case_id, "posted while safe")
    # Receivers date an update by the later of its record's time and the broker's receipt,
    # so a thief cannot backdate below the revocation.  Wait for the clock to pass `since`.
    since = safe.receipt_time + 1
    while wall_clock() <= since:
        await asyncio.sleep(0)
    await juma.post_note(case_id, "posted by the thief")  # the broker, not yet told, accepts it
    await net.admins["tz-tra"].revoke(juma.keys.device_id, reason="key-compromise", since=since)
    await net.publish("tz-tra")
    await alice.refresh_revocations(force=True)  # a running client asks at least once a minute
    assert [e.kind for e in await alice.sync(case_id)] == ["update", "voided"]
    assert [e.content["text"] for e in await alice.history(case_id) if e.content] == ["posted while safe"]
    with pytest.raises(UsageError):
        await net.admins["tz-tra"].revoke(juma.keys.device_id, since=wall_clock() + 60_000)


async def test_a_bot_outside_its_scopes_is_refused(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert", "read"))
    case_id = await alice.create_case(title="Op", members=[("ke-kra", "scanner")])
    other = await alice.create_case(title="Not for bots")
    with pytest.raises(NotPermittedError):
        await bot.post_note(case_id, "bots may not post notes")
    assert await stored_updates(net, case_id) == []
    with pytest.raises(BrokerUnknownCase) as refused:  # not a member: as for no such case
        await bot.post_alert(other, subject_kind="vehicle", subject={"mode": "road"}, reason="x")
    assert refused.value.status == 404
    assert await stored_updates(net, other) == []
    # The refusal used up nothing: the bot's next allowed post takes the very position.
    posted = await bot.post_alert(case_id, subject_kind="vehicle", subject={"mode": "road"}, reason="x")
    assert posted.seq == 1 and [e.content_type for e in await alice.sync(case_id)] == ["alert"]


# --------------------------------------------------------------------------- exactly once


async def test_an_update_retried_after_a_timeout_appears_once(aiohttp_server: Any, net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    release, forwarded = asyncio.Event(), []
    async with aiohttp.ClientSession() as upstream:

        async def proxy(request: web.Request) -> web.StreamResponse:
            """Forward to the broker; hold the first post's answer until the client gave up."""
            body = await request.read()
            data, status, ctype = await forward(upstream, net.url, request, body)
            if request.method == "POST" and request.path.endswith("/updates"):
                forwarded.append(body)
                if len(forwarded) == 1:
                    await release.wait()
            return web.Response(body=data, status=status, headers={"Content-Type": ctype})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy)
        server = await aiohttp_server(app)
        slow = await Client.open(alice.directory, passphrase=PASSPHRASE, timeout=1.0)
        try:
            await slow.login(server_url=str(server.make_url("")))
            posted = await slow.post_note(case_id, "seizure at Namanga")
        finally:
            release.set()
            await slow.close()
    assert posted.retries == 1
    assert len(forwarded) == 2 and forwarded[0] == forwarded[1]  # the retry sent the same bytes
    assert len(await stored_updates(net, case_id)) == 1


async def test_an_update_left_by_a_crash_is_sent_once_by_the_next_run(
    aiohttp_server: Any, net: Network
) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    note = {"markings": {"handling": "H2", "tlp": "AMBER"}, "lang": "en", "text": "seizure at Namanga"}
    async with aiohttp.ClientSession() as upstream:
        server = await aiohttp_server(refusing_posts(upstream, net.url))
        cut_off = await Client.open(alice.directory, passphrase=PASSPHRASE)
        try:
            await cut_off.login(server_url=str(server.make_url("")))
            with pytest.raises(BrokerRefusal) as failed:
                await cut_off.post(case_id, "note", note, tries=2)
            assert failed.value.transient
            assert len(await cut_off.store.outbox(case_id)) == 1  # sealed and kept, final bytes and all
        finally:
            await cut_off.close()
    again = await Client.open(alice.directory, passphrase=PASSPHRASE)
    try:
        await again.login(server_url=net.url)
        retried = await again.post(case_id, "note", note)  # the same command, run again
        nxt = await again.post_note(case_id, "next")
        assert await again.store.outbox() == []
    finally:
        await again.close()
    assert (retried.seq, nxt.seq) == (1, 2)
    assert len(await stored_updates(net, case_id)) == 2


async def test_an_idempotency_key_makes_a_repeated_post_a_no_op(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    first = await alice.post_typed(
        case_id, "note", {"text": "hourly scan"}, idempotency_key="scan-2026-11-22T10"
    )
    second = await alice.post_typed(
        case_id, "note", {"text": "hourly scan"}, idempotency_key="scan-2026-11-22T10"
    )
    assert first.update_id == second.update_id
    assert len(await stored_updates(net, case_id)) == 1


async def test_invalid_content_is_refused_before_anything_is_sent(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    with pytest.raises(InvalidContentError):
        await alice.post_typed(case_id, "seizure", {"place": {"name": "Namanga"}})
    assert await alice.store.outbox(case_id) == []
    assert await stored_updates(net, case_id) == []
    await alice.post_note(case_id, "the view is as it was: this takes the first position")


# --------------------------------------------------------------------------- following


async def test_follow_delivers_in_order_and_resumes_after_a_cut(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    got: list[str] = []
    first_seen = asyncio.Event()

    async def follow() -> None:
        async for event in juma.follow([case_id]):
            if event.kind == "update" and event.content:
                got.append(event.content["text"])
                first_seen.set()
                if len(got) == 3:
                    return

    task = asyncio.create_task(follow())
    await alice.post_note(case_id, "one")
    await asyncio.wait_for(first_seen.wait(), 10)
    for conn in list(net.app[HUB].by_device.get(juma.keys.device_id, ())):
        net.app[HUB].close(conn, CLOSE_SLOW, "test: cut the stream")
    await alice.post_note(case_id, "two")
    await alice.post_note(case_id, "three")
    await asyncio.wait_for(task, 20)
    assert got == ["one", "two", "three"]


# --------------------------------------------------------------------------- evidence and trust


async def test_evidence_verifies_offline_and_one_changed_byte_fails(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    await alice.post_note(case_id, "chain of custody starts")
    bundle = await alice.export_evidence(case_id)
    pins = {"ke-kra": net.admins["ke-kra"].fingerprint}
    report = verify_bundle(bundle, pins)
    assert [r.update.record.content_type for r in report.records] == ["note"]
    # An unwitnessed case: the bundle says only the broker vouches for its order and time.
    assert not report.witnessed and report.witnesses == () and report.witnessed_at is None
    forged = bytearray(bundle)
    forged[-1] ^= 0x01  # a byte of the exporter's signature
    with pytest.raises(BadSignatureError):
        verify_bundle(bytes(forged), pins)
    with pytest.raises(UntrustedError):
        verify_bundle(bundle, {"ke-kra": "00000 00000 00000 00000 00000 00000"})


async def test_a_witnessed_cases_evidence_ends_at_its_last_final_entry(net: Network) -> None:
    """Until the broker serves its witnessed log (branch ``brokerlog``), the test plays it:
    it signs a checkpoint over the genesis with the broker's key and cosigns it as KRA's
    witness, and stores it as the profile's finality receipt, as ``check_log`` would."""
    alice = await net.device("ke-kra", "alice")
    witness_key = SigningKey(os.urandom(32))
    witness = Witness(
        name="witness.ke-kra.example", public_key=witness_key.public_key, url="http://127.0.0.1/w"
    )
    alice.trust.add_witness_list(
        issue_witness_list(net.admins["ke-kra"].root, number=1, issued_at=wall_clock(), witnesses=[witness])
    )
    case_id = await alice.create_case(title="Op", witnessed=True)
    await alice.post_note(case_id, "still pending witness")
    with pytest.raises(NotPermittedError, match="no entry of this case is final yet"):
        await alice.export_evidence(case_id)

    view = await alice.view(case_id)
    leaf = EntryLeaf(
        case_id=case_id, seq=0, entry_hash=view.entry_hashes[0], head=view.heads[1], time=wall_clock()
    )
    checkpoint = tlog.sign_checkpoint(net.server_key, size=1, root=merkle.leaf_hash(leaf.encode()))
    parsed = note.Note.parse(checkpoint)
    cosig = note.cosign(
        parsed.text, name=witness.name, secret_key=witness_key._secret, timestamp=wall_clock() // 1000
    )
    checkpoint = note.Note(text=parsed.text, signatures=(*parsed.signatures, cosig)).encode()
    receipt = tlog.make_receipt(leaf, index=0, checkpoint=checkpoint, proof=[])
    await alice.store.put_finality(case_id, 1, wall_clock(), None, receipt)

    with pytest.raises(NotPermittedError, match="entry 1 is still pending witness; try again once"):
        await alice.export_evidence(case_id, [1])
    report = verify_bundle(await alice.export_evidence(case_id), {"ke-kra": net.admins["ke-kra"].fingerprint})
    assert report.witnessed and report.log_length == 1 and report.records == ()
    assert [v.name for v in report.witnesses] == [witness.name]


async def test_a_wrong_fingerprint_pins_nothing(net: Network) -> None:
    alice = await net.device("ke-kra", "alice", pin_all=False)
    with pytest.raises(UntrustedError):
        await alice.trust_add("tz-tra", net.admins["ke-kra"].fingerprint)
    assert "tz-tra" not in alice.trusted()


async def test_the_broker_key_is_pinned_at_first_login(net: Network, aiohttp_server: Any) -> None:
    alice = await net.device("ke-kra", "alice")
    with pytest.raises(UntrustedError):
        await alice.login(server_key=bytes(32))


# --------------------------------------------------------------------------- keys at rest


async def test_keys_are_sealed_at_rest_and_reopen_with_the_passphrase(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    await alice.post_note(case_id, "one")
    db = (alice.directory / "state.db").read_bytes()
    assert alice._secrets.sign_seed not in db and alice._secrets.kem_seed not in db
    with pytest.raises(ProfileError):
        await Client.open(alice.directory, passphrase="wrong")
    again = await Client.open(alice.directory, passphrase=PASSPHRASE)
    try:
        await again.post_note(case_id, "two")  # the replayed view continues the sender chain
        texts = [e.content["text"] for e in await again.history(case_id) if e.content]
        assert texts == ["one", "two"]
    finally:
        await again.close()


def test_a_bot_key_file_must_be_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "bot.key"
    write_key_file(path, DeviceSecrets.generate(os.urandom))
    assert read_key_file(path).sign_seed
    path.chmod(0o640)
    with pytest.raises(ProfileError, match="open to other users"):
        read_key_file(path)
    with pytest.raises(ProfileError, match="refusing to overwrite"):
        write_key_file(path, DeviceSecrets.generate(os.urandom))


def test_an_enrolment_request_proves_possession_of_its_key() -> None:
    keys = DeviceKeys.generate(os.urandom)
    request = make_enrolment_request(keys, agency_id="ke-kra", user_id="alice", now=1)
    assert open_enrolment_request(request).sign_key == keys.sign_public
    forged = bytearray(request)
    forged[-1] ^= 1
    with pytest.raises(BadSignatureError):
        open_enrolment_request(bytes(forged))
