"""Fixtures: a real broker on loopback (pytest-aiohttp), driven by raw devices or by real clients.

``deployment`` is the broker with a deterministic world and protocol-level
``Officer`` devices; ``net`` is the broker with real agency administrators and
``Client`` devices (tests.support.agencies).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from caseline.crypto.keys import SigningKey
from caseline.server.app import create_app
from caseline.server.config import ServerConfig

from tests.support.agencies import PARTNERS, Network, start_network
from tests.support.broker import Officer, register_agencies
from tests.support.world import World

ClientFactory = Callable[[Application], Awaitable[TestClient]]


class Deployment:
    """A broker, its world of agencies, and helpers to enrol officers."""

    def __init__(self, client: TestClient, world: World, server_key: SigningKey) -> None:
        self.client, self.world, self.server_key = client, world, server_key

    @property
    def app(self) -> Application:
        app = self.client.app
        assert app is not None
        return app

    async def officer(
        self, agency: str, user: str, role: str = "officer", scopes: tuple[str, ...] = ()
    ) -> Officer:
        device = self.world.device(agency, user, role=role, scopes=scopes)
        return await Officer(self.client, self.world, device, self.server_key).enrol()


@pytest.fixture
def make_deployment(aiohttp_client: ClientFactory, tmp_path: Path) -> Callable[..., Awaitable[Deployment]]:
    async def make(**config: object) -> Deployment:
        world = World(f"broker-{tmp_path.name}")
        world.agency("ke-kra")
        world.agency("tz-tra")
        server_key = world.server_key
        cfg = ServerConfig(data_dir=tmp_path, **config)  # type: ignore[arg-type]
        app = create_app(cfg, server_key=server_key, clock=lambda: world.now)
        client = await aiohttp_client(app)
        await register_agencies(client, world)
        return Deployment(client, world, server_key)

    return make


@pytest.fixture
async def deployment(make_deployment: Callable[..., Awaitable[Deployment]]) -> Deployment:
    return await make_deployment()


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    """The agencies ``net`` registers as (id, name, country); a test module overrides it to change them."""
    return PARTNERS


@pytest.fixture
async def net(
    aiohttp_server: Any, tmp_path: Path, net_agencies: tuple[tuple[str, str, str], ...]
) -> AsyncIterator[Network]:
    """A broker on loopback with real agency administrators; ``net.device`` enrols real clients."""
    network = await start_network(aiohttp_server, tmp_path)
    for agency_id, name, country in net_agencies:
        await network.agency(agency_id, name, country)
    yield network
    await network.close()
