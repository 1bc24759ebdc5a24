"""``Client.requests`` and ``Client.due``: the request index kept as events are stored (real broker)."""

from __future__ import annotations

import sqlite3

from caseline.client.client import Client
from caseline.schemas.handling import format_time

from tests.support.agencies import PASSPHRASE, Network

DAY = 86_400_000


async def two_agency_case(net: Network) -> tuple[Client, Client, bytes]:
    amina = await net.device("ke-kra", "amina")
    juma = await net.device("tz-tra", "juma")
    case_id = await amina.create_case(title="Operation Mto", reference="KE-2026-7")
    await amina.add_members(case_id, [("tz-tra", "juma", "member")])
    return amina, juma, case_id


async def test_due_follows_a_request_through_ack_extension_and_answer(net: Network) -> None:
    amina, juma, case_id = await two_agency_case(net)
    request = await amina.post_request(
        case_id, subject="Vehicle records for KBX 123A", category="urgent-indirect"
    )
    await juma.sync(case_id)

    (row,) = await juma.requests(case_id)
    assert row.request_id == request.update_id and row.to_agencies == ("tz-tra",)
    assert row.deadline == row.start + 3 * DAY and row.state == "open"
    owed = await juma.due(now=row.start + 1)
    assert [r.request_id for r in owed.owe] == [request.update_id] and owed.owed == ()
    assert [r.request_id for r in (await amina.due(now=row.start)).owed] == [request.update_id]
    assert (await juma.due(now=row.deadline + 1)).owe[0].overdue(row.deadline + 1)

    await juma.post_ack(case_id, of=request.update_id, state="received")
    later = row.deadline // 1000 * 1000 + 2 * DAY  # RFC 3339 in the ack: whole seconds
    extended = format_time(later)
    await juma.post_ack(
        case_id,
        of=request.update_id,
        state="extended",
        deadline=extended,
        extension_reason="judicial-authorisation",
        note="court order pending",
    )
    answer = await juma.post_reply(case_id, in_reply_to=request.update_id, text="Owner: J. Doe")
    await amina.sync(case_id)
    (seen,) = await amina.requests(case_id)
    assert seen.state == "extended" and seen.extensions == 1 and seen.deadline == later
    assert seen.start == row.start  # the broker's receipt time, the same for every member

    await juma.post_ack(case_id, of=request.update_id, state="answered", answer=answer.update_id.hex())
    await amina.sync(case_id)
    (done,) = await amina.requests(case_id)
    assert done.state == "answered" and done.answer_id == answer.update_id and done.on_time
    assert (await amina.due()).owed == () and (await juma.due()).owe == ()


async def test_the_index_is_sealed_and_rebuilt_when_missing(net: Network) -> None:
    """A profile from before the index (or one whose index is gone) rebuilds it from its events."""
    amina, juma, case_id = await two_agency_case(net)
    await amina.post_request(case_id, subject="Manifest of MSKU1234565", category="other", to=["tz-tra"])
    await juma.sync(case_id)
    before = await juma.requests()
    path = juma.directory / "state.db"
    db = sqlite3.connect(path)
    try:
        (sealed,) = db.execute("SELECT sealed FROM workflow").fetchone()
        assert b"MSKU1234565" not in sealed  # the subject is sealed at rest
        db.execute("DELETE FROM workflow")
        db.commit()
    finally:
        db.close()
    await juma.close()
    reopened = await Client.open(juma.directory, passphrase=PASSPHRASE)
    try:
        assert await reopened.requests() == before
    finally:
        await reopened.close()
