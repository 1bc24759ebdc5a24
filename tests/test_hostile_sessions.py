"""Sessions the broker holds survive what a flood does to their source (issue 14, review finding).

A source past its failed-authentication limit is refused anything that needs
the database.  A member behind that source (a NAT shared with a token guesser)
is still served because the broker holds its session in memory: after a
restart too, when the live sessions are loaded back at start-up.
"""

from __future__ import annotations

import pytest
from caseline.server import routes
from caseline.server.core import Limits, token_hash
from caseline.server.keys import SESSIONS

from tests.support.broker import Officer
from tests.test_hostile_revocation import Brokers, brokers  # noqa: F401 - the fixture

LIMITS = Limits(auth_failures_per_window=3)


async def test_after_a_restart_a_held_session_is_served_from_a_blocked_source(
    brokers: Brokers,  # noqa: F811 - the fixture
) -> None:
    d = await brokers.start(limits=LIMITS)
    alice = await d.officer("ke-kra", "alice")
    await d.client.close()  # the broker stops; alice's session is stored

    d = await brokers.start(limits=LIMITS)
    assert len(d.app[SESSIONS]) == 1  # loaded back at start-up
    for _ in range(LIMITS.auth_failures_per_window):
        assert (await d.client.get("/v1/cases", headers={"Authorization": "Bearer guess"})).status == 401
    assert (await d.client.get("/v1/cases", headers={"Authorization": "Bearer guess"})).status == 429
    alice = Officer(d.client, d.world, alice.device, d.server_key, token=alice.token)
    r = await d.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 200, await r.text()


async def test_a_full_session_cache_drops_its_oldest_entry_not_every_entry(
    brokers: Brokers,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Making room for one session must not forget the others: they keep members served."""
    d = await brokers.start(limits=LIMITS)
    await d.officer("ke-kra", "alice")
    await d.officer("tz-tra", "bob")
    held = list(d.app[SESSIONS].keys())
    monkeypatch.setattr(routes, "MAX_CACHED_SESSIONS", len(held))
    carol = await d.officer("ke-kra", "carol")  # her login makes room for her session
    assert carol.token is not None
    assert list(d.app[SESSIONS].keys()) == [*held[1:], token_hash(carol.token)]
