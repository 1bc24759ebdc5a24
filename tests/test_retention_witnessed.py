"""Retention in a witnessed case (PROTOCOL.md §7.4): bodies go by the witnesses' time.

The broker may purge only with a receipt members accept: into a checkpoint the
case's quorum cosigned longer ago than the retention period.
"""

from __future__ import annotations

from caseline.crypto import tlog
from caseline.crypto.caselog import DAY_MS, KIND_PURGED, KIND_UPDATE, CaseView
from caseline.schemas.codec import pack
from caseline.schemas.wire import Envelope, Witnessing, decode_signed
from caseline.server import retention
from caseline.server.core_log import BrokerLog
from caseline.server.store import EntryRow

from tests.support.world import World, note, open_case, post
from tests.test_tlog import Witnesses


def test_a_witnessed_case_is_purged_only_by_the_witnesses_time_and_members_accept_it() -> None:
    world = World("retention-witnessed")
    world.agency("ke-kra")
    world.agency("tz-tra")
    ws = Witnesses(world, ["ke-kra", "tz-tra"])
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    rule = Witnessing(rule="each-agency", alarm_after=60_000)
    broker, state, _ = open_case(
        world, alice, [(bob, "member")], policy=world.policy(retention_days=1), witnessing=rule
    )
    view = CaseView(trust=ws.trust(), me=alice.keys)
    broker.feed(view)
    envelope = post(world, view, broker, note("bay 4"))

    # The broker's own log over the same entries, and one checkpoint both witnesses cosigned.
    log = BrokerLog(world.server_key)
    leaves = [tlog.receipt_leaf(r).encode() for r in broker.receipts]
    size = len(leaves)
    sealed = log.seal_leaves(leaves, [])
    log.commit(sealed)
    cosigned_at = world.now // 1000
    witnessed_note = ws.cosign(ws.cosign(sealed.checkpoint, "ke-kra", cosigned_at), "tz-tra", cosigned_at)
    rows = [
        EntryRow(case_id=broker.case_id, seq=1, kind=KIND_UPDATE, body=envelope, receipt=sealed.receipts[1],
                 slot=None, created_at=world.now)
    ]  # fmt: skip
    lists = {a: (w,) for a, w in ws.listed.items()}

    def cutoff(now: int) -> int:  # what the retention pass passes: now less the retention period
        return now - DAY_MS

    # A day has not passed since the witnesses saw it: nothing may go.
    early = retention.quorum_checkpoints(
        [(size, witnessed_note)], state, lists, before=cutoff(world.now + DAY_MS - 1)
    )
    assert early == []
    # It has: the update goes, with a receipt into the witnessed checkpoint.
    later = world.now + DAY_MS
    witnessed = retention.quorum_checkpoints([(size, witnessed_note)], state, lists, before=cutoff(later))
    assert [w.at for w in witnessed] == [cosigned_at * 1000]
    ((seq, receipt),) = retention.purge_plan(rows, witnessed, log)
    assert seq == 1

    env = Envelope.decode(decode_signed(envelope)[0])
    reader = CaseView(trust=ws.trust(), me=bob.keys)
    broker.feed(reader, stop=1)
    reader.apply(
        seq=1,
        kind=KIND_PURGED,
        body=pack([env.epoch, env.sender, env.counter]),
        now=later,
        receipt=receipt,
    )
    assert reader.count == 2

    # One agency's witness alone is not the case's quorum: nothing goes.
    one = ws.cosign(sealed.checkpoint, "ke-kra", cosigned_at)
    assert retention.quorum_checkpoints([(size, one)], state, lists, before=cutoff(later)) == []
