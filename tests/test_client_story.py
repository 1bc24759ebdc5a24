"""The demo's story, end to end: two agencies, a bot, one case, real broker on loopback."""

from __future__ import annotations

from typing import Any

from caseline.client.client import verify_bundle

from tests.support.agencies import Network

SEIZURE: dict[str, Any] = {
    "occurred_at": "2026-11-20T06:40:00Z",
    "place": {"name": "Namanga one-stop border post", "country": "KE"},
    "goods": [{"description": "ivory tusks", "quantity": 42, "unit": "kg"}],
}


async def test_two_agencies_and_a_bot_run_a_case(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    juma = await net.device("tz-tra", "juma")
    bot = await net.device("ke-kra", "scanner-bot", role="bot", scopes=("alert", "read"))

    case_id = await alice.create_case(
        title="Operation Kilimanjaro", reference="KE-2026-0042", members=[("ke-kra", "scanner-bot")]
    )
    await alice.add_members(case_id, [("tz-tra", "juma", "member")])
    seizure = await alice.post_seizure(case_id, **SEIZURE)
    reply = await juma.post_reply(case_id, in_reply_to=seizure.update_id, text="Consignee known to us.")
    alert = await bot.post_alert(
        case_id, subject_kind="container", subject={"mode": "road", "container": "MSKU1234565"}, reason="scan"
    )
    assert [seizure.seq, reply.seq, alert.seq] == [2, 3, 4]

    await juma.sync(case_id)
    updates = [e for e in await juma.history(case_id) if e.kind == "update"]
    assert [(e.author.name if e.author else None, e.content_type, e.readable) for e in updates] == [
        ("ke-kra:alice", "seizure", True),
        ("tz-tra:juma", "reply", True),
        ("ke-kra:scanner-bot", "alert", True),
    ]
    assert updates[1].content is not None
    assert updates[1].content["in_reply_to"] == seizure.update_id.hex()
    summaries = {s.case_id: s for s in await juma.cases()}
    assert summaries[case_id].title == "Operation Kilimanjaro"
    assert summaries[case_id].unread == 2  # alice's seizure and the bot's alert

    await alice.remove_members(case_id, [("ke-kra", "scanner-bot")])
    a, j = await alice.verify_case(case_id), await juma.verify_case(case_id)
    assert (a.count, a.head, a.code) == (j.count, j.head, j.code)

    # The case is H2: juma's reply goes into KRA's evidence only once TRA releases it.
    pins = {"ke-kra": net.admins["ke-kra"].fingerprint, "tz-tra": net.admins["tz-tra"].fingerprint}
    plan = await alice.evidence_plan(case_id)
    assert [w.seq for w in plan.withheld] == [reply.seq]
    report = verify_bundle(await alice.export_evidence(case_id), pins)
    assert {r.update.record.content_type for r in report.records} == {"seizure", "alert"}
    await juma.post_typed(case_id, "release", {"of": reply.update_id.hex(), "purpose": "evidence"})
    await alice.sync(case_id)
    report = verify_bundle(await alice.export_evidence(case_id), pins)
    assert {r.update.record.content_type for r in report.records} == {"seizure", "reply", "alert", "release"}
    assert [(u.seq, u.purpose) for u in report.releases] == [(reply.seq, "evidence")]
