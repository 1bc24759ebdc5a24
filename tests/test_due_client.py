"""``Client.requests`` and ``Client.due``: the request index kept as events are stored (real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from caseline.client import reminder_bot
from caseline.client.client import Client
from caseline.client.reminders import OVERDUE, parse_before
from caseline.client.workflow import CaseId, RequestId, RequestRow, witnessed_start
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
        (sealed,) = db.execute("SELECT open_sealed FROM workflow").fetchone()
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


async def test_the_long_running_bot_wakes_at_each_threshold_and_on_new_events(net: Network) -> None:
    """``remind`` without ``--once``: the clock is handed in, the wake-ups are events, not sleeps."""
    juma = await net.device("tz-tra", "juma")
    bot = await net.device("ke-kra", "reminder-bot", role="bot", scopes=("reminder", "read"))
    case_id = await juma.create_case(title="Operation Ziwa", reference="TZ-2026-3")
    await juma.add_members(case_id, [("ke-kra", "reminder-bot", "member")])
    request = await juma.post_request(case_id, subject="Driver's record", category="urgent-direct")
    await bot.sync(case_id)
    (row,) = await bot.requests(case_id)

    now = [row.start]
    bot.clock = lambda: now[0]
    given: list[str] = []
    woke = asyncio.Event()
    changed = asyncio.Event()

    async def deliver(r: RequestRow, label: str) -> None:
        given.append(label)
        woke.set()

    task = asyncio.create_task(
        reminder_bot.remind(bot, [parse_before("2h")], deliver, once=False, changed=changed)
    )
    try:
        for moment, label in ((row.deadline - 2 * 3_600_000, "2h"), (row.deadline + 1, OVERDUE)):
            now[0] = moment
            woke.clear()
            changed.set()  # what a stored event (or the timer) does: the bot looks again
            await asyncio.wait_for(woke.wait(), 30)
            assert given[-1] == label
        assert given == ["2h", OVERDUE]  # each once (plan() and the CLI test show no repeats)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert request.update_id == row.request_id


def test_a_post_dated_receipt_is_capped_by_the_witnessed_time() -> None:
    row = RequestRow(
        case_id=CaseId(b"c" * 16), request_id=RequestId(b"r" * 32), seq=5, from_agency="ke-kra",
        from_user="amina", to_agencies=("tz-tra",), category="other", subject="s",
        start=10 * DAY, deadline=17 * DAY,
    )  # fmt: skip
    assert witnessed_start(row, final=5, witnessed_at=DAY) == row  # not yet final: the receipt's time
    assert witnessed_start(row, final=6, witnessed_at=11 * DAY) == row  # witnessed later: honest receipt
    capped = witnessed_start(row, final=6, witnessed_at=9 * DAY)
    assert (capped.start, capped.deadline) == (9 * DAY, 16 * DAY)


async def test_an_index_that_cannot_be_written_does_not_fail_the_sync(net: Network) -> None:
    amina, juma, case_id = await two_agency_case(net)
    await juma.sync(case_id)
    db = sqlite3.connect(juma.directory / "state.db")
    try:
        db.execute("DROP TABLE workflow")  # what a broken or foreign index looks like to the fold
        db.commit()
    finally:
        db.close()
    request = await amina.post_request(case_id, subject="Manifest", category="other")
    events = await juma.sync(case_id)  # verified and stored all the same
    assert [e.update_id for e in events if e.content_type == "request"] == [request.update_id]
