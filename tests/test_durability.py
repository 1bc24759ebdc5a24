"""Acknowledged means on disk: kill -9 the broker mid-stream and count what survived."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from caseline.crypto.caselog import CaseView, verify_receipt
from caseline.crypto.keys import SigningKey

from tests.support.broker import Officer
from tests.support.process import Server, UrlClient, cli, free_port
from tests.support.world import World


@pytest.fixture
def broker_dir(tmp_path: Path) -> tuple[Path, World]:
    world = World("durability")
    world.agency("ke-kra")
    world.agency("tz-tra")
    cli(tmp_path, "init")
    for agency_id, root in world.roots.items():
        cli(
            tmp_path,
            "agency",
            "add",
            agency_id,
            "--name",
            agency_id.upper(),
            "--country",
            "KE",
            "--root-key",
            root.public_key.hex(),
        )
    return tmp_path, world


async def test_kill_9_loses_nothing_acknowledged(broker_dir: tuple[Path, World]) -> None:
    data_dir, world = broker_dir
    server_key = SigningKey((data_dir / "server.key").read_bytes())
    world.server_key = server_key
    server = Server(data_dir, free_port())
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    acked: dict[bytes, bytes] = {}  # envelope -> receipt
    unacked: list[tuple[Officer, bytes]] = []
    async with aiohttp.ClientSession() as session:
        client = UrlClient(session, base)
        officers = [
            await Officer(client, world, world.device(a, f"u{i}"), server_key).enrol()
            for i, a in enumerate(["ke-kra", "tz-tra", "ke-kra", "tz-tra"])
        ]
        case_id = await officers[0].create_case([(o.device, "member") for o in officers[1:]])
        for o in officers[1:]:
            await o.sync(case_id)
        stop = asyncio.Event()
        enough = asyncio.Event()

        async def writer(o: Officer) -> None:
            i = 0
            while not stop.is_set():
                envelope = o.seal(case_id, f"{o.device.user} #{i}")
                i += 1
                try:
                    r = await o.post(case_id, envelope)
                    if r.status == 201:
                        acked[envelope] = await r.read()
                        if len(acked) >= 60:
                            enough.set()
                        continue
                except aiohttp.ClientError:
                    pass
                unacked.append((o, envelope))
                return

        tasks = [asyncio.create_task(writer(o)) for o in officers]
        await asyncio.wait_for(enough.wait(), timeout=60)
        server.kill()
        stop.set()
        await asyncio.gather(*tasks)
        await server.wait()

        await server.start()
        for o in officers:
            await o.login()
        for o, envelope in unacked:  # clients retry with the same bytes
            r = await o.post(case_id, envelope)
            assert r.status == 201, await r.text()
            receipt = await r.read()
            if envelope in acked:
                assert receipt == acked[envelope]
            acked[envelope] = receipt
        fresh = CaseView(trust=world.trust(), me=officers[1].device.keys)
        reader = Officer(client, world, officers[1].device, server_key, token=officers[1].token)
        reader.views[case_id] = fresh
        await reader.sync(case_id)
        server.kill()
        await server.wait()

    stored = {}
    page_bodies = [fresh.entry_hashes[i] for i in range(fresh.count)]
    assert len(page_bodies) == fresh.count
    for envelope, receipt in acked.items():
        rec = verify_receipt(receipt, server_key.public_key)
        assert rec.seq < fresh.count
        assert fresh.entry_hashes[rec.seq] == rec.entry_hash, "an acknowledged update is missing or moved"
        stored[rec.seq] = envelope
    assert len(stored) == len(acked), "two acknowledged updates share a position"
    assert fresh.count == len(acked) + 1  # the genesis, then every acknowledged update exactly once
