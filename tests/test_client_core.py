"""The client's decisions, made in its pure core: no sockets, no disk, no clock.

``Client`` (and any other shell: a web app, ``tests/support/link.py``) asks the
``Ledger`` which entries of a page are new, whether the log was rolled back,
whether a receipt is for the update sent, and whether a refused update should
be sealed again.  Each decision is driven here against a real ``BrokerCore``.
"""

from __future__ import annotations

import dataclasses

import pytest
from caseline.schemas.api import Entry
from caseline.schemas.errors import ForkError, GapError

from tests.support.link import Endpoint, Link
from tests.support.world import World


@dataclasses.dataclass
class Scene:
    link: Link
    alice: Endpoint
    bob: Endpoint
    case_id: bytes


@pytest.fixture
def scene() -> Scene:
    world = World("client-core")
    world.agency("ke-kra")
    world.agency("tz-tra")
    link = Link(world)
    alice, bob = link.device("ke-kra", "alice"), link.device("tz-tra", "bob")
    case_id = link.create_case(alice, [bob])
    link.post(alice, case_id, "one")
    link.post(alice, case_id, "two")
    return Scene(link, alice, bob, case_id)


def page(scene: Scene, after: int = 0) -> tuple[list[Entry], int]:
    return scene.link.broker.entries(scene.case_id, device_id=scene.bob.id, after=after)


def test_a_page_seen_twice_adds_nothing(scene: Scene) -> None:
    entries, _ = page(scene)
    ledger = scene.bob.ledger
    first = ledger.take(scene.case_id, entries, now=scene.link.world.now)
    again = ledger.take(scene.case_id, entries, now=scene.link.world.now)
    assert (len(first.accepted), first.error) == (3, None)
    assert (again.accepted, again.events, again.error) == ([], [], None)


def test_a_different_entry_at_a_held_position_is_a_fork_and_keeps_what_passed(scene: Scene) -> None:
    entries, _ = page(scene)
    ledger = scene.bob.ledger
    ledger.take(scene.case_id, entries[:2], now=scene.link.world.now)
    forged = dataclasses.replace(entries[1], body=entries[2].body)  # seq 1, another update
    taken = ledger.take(scene.case_id, [forged, entries[2]], now=scene.link.world.now)
    assert isinstance(taken.error, ForkError) and taken.accepted == []
    assert ledger.view(scene.case_id).count == 2  # nothing moved


def test_a_shorter_log_is_a_rollback_and_an_empty_page_below_the_count_is_withholding(scene: Scene) -> None:
    entries, served = page(scene)
    ledger = scene.bob.ledger
    ledger.take(scene.case_id, entries, now=scene.link.world.now)
    assert ledger.next_page(scene.case_id, served=served, got=len(entries)) is None
    with pytest.raises(ForkError, match="rollback"):
        ledger.next_page(scene.case_id, served=served - 1, got=0)
    with pytest.raises(GapError, match="withholds"):  # no endless asking, and no silent stop
        ledger.next_page(scene.case_id, served=served + 5, got=0)
    assert ledger.next_page(scene.case_id, served=served + 5, got=1) == served


def test_a_receipt_for_another_update_is_refused(scene: Scene) -> None:
    link, alice = scene.link, scene.alice
    link.post(alice, scene.case_id, "three", deliver=False)
    _, mine = alice.outbox[0]
    receipt = link.broker.post_update(scene.case_id, mine, device_id=alice.id)
    r = alice.ledger.check_receipt(scene.case_id, mine, receipt)
    assert alice.ledger.receipt_is_next(scene.case_id, r)
    entries, _ = page(scene)
    other_update = entries[1].body
    with pytest.raises(ForkError, match="another entry"):
        alice.ledger.check_receipt(scene.case_id, other_update, receipt)
    with pytest.raises(ForkError, match="does not hold"):  # not yet taken in
        alice.ledger.check_acknowledged(scene.case_id, r)


def test_only_a_conflict_over_a_left_epoch_is_sealed_again(scene: Scene) -> None:
    link, alice, bob = scene.link, scene.alice, scene.bob
    link.sync(bob, scene.case_id)
    staged = link.seal(bob, scene.case_id, "sealed before the commit")
    envelope = staged.sealed.envelope
    assert not bob.ledger.reseal_after_refusal(scene.case_id, envelope, 409)  # same epoch: final
    link.change(alice, scene.case_id, [bob])
    link.sync(bob, scene.case_id)
    assert bob.ledger.reseal_after_refusal(scene.case_id, envelope, 409)
    assert not bob.ledger.reseal_after_refusal(scene.case_id, envelope, 403)  # not a conflict
