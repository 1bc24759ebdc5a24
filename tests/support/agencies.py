"""A real broker on loopback with real agencies, administrators and client devices.

Everything goes through the product: ``AgencyAdmin`` creates roots and issues
certificates, ``Client`` enrols, pins partners and talks to the aiohttp broker
over TCP.  Only the operator's step (registering an agency root) is done on
the broker's store directly, as ``caseline-server agency add`` does.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from caseline.client.admin import AgencyAdmin
from caseline.client.client import Client
from caseline.client.transport import BrokerConnection
from caseline.crypto.keys import SigningKey
from caseline.server.app import create_app
from caseline.server.config import ServerConfig
from caseline.server.keys import CORE, STORE
from caseline.server.store import AgencyRow

PASSPHRASE = "correct horse battery staple"
#: The two partner agencies most tests need: (id, name, country).
PARTNERS: tuple[tuple[str, str, str], ...] = (
    ("ke-kra", "Kenya Revenue Authority", "KE"),
    ("tz-tra", "Tanzania Revenue Authority", "TZ"),
)


class Network:
    """One broker, the agencies registered with it, and the devices enrolled so far."""

    def __init__(self, server: TestServer, app: web.Application, root: Path, server_key: SigningKey) -> None:
        self.server, self.app, self.root = server, app, root
        #: The broker's receipt key: tests that play a compromised broker sign with it.
        self.server_key = server_key
        self.admins: dict[str, AgencyAdmin] = {}
        self.clients: list[Client] = []

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def agency(self, agency_id: str, name: str, country: str) -> AgencyAdmin:
        admin = await AgencyAdmin.create(
            self.root / f"admin-{agency_id}", agency_id, passphrase=PASSPHRASE, kdf="interactive"
        )
        await self.register_agency(agency_id, name, country, admin.root.public_key)
        self.admins[agency_id] = admin
        return admin

    async def register_agency(self, agency_id: str, name: str, country: str, root_key: bytes) -> None:
        """The operator's step, after checking the fingerprint with the agency."""
        await self.app[STORE].add_agency(AgencyRow(agency_id, name, country, root_key, 0))
        self.app[CORE].trust.pin(agency_id, root_key)

    async def device(
        self,
        agency_id: str,
        user: str,
        *,
        role: str = "officer",
        scopes: tuple[str, ...] = (),
        pin_all: bool = True,
    ) -> Client:
        """Enrol a new device the way the CLI does, then pin every agency's root."""
        admin = self.admins[agency_id]
        client = await Client.create(
            self.root / f"{agency_id}-{user}-{secrets.token_hex(2)}",
            agency_id=agency_id,
            user_id=user,
            server_url=self.url,
            passphrase=PASSPHRASE,
            kdf="interactive",
        )
        self.clients.append(client)
        cert = await admin.issue(await client.enrolment_request(), role=role, scopes=scopes)
        await self.publish(agency_id)
        await client.trust_add(agency_id, admin.fingerprint)
        await client.login(cert=cert)
        if pin_all:
            for other in self.admins.values():
                await client.trust_add(other.agency_id, other.fingerprint)
        return client

    async def publish(self, agency_id: str) -> None:
        broker = BrokerConnection(self.url, keys=None, server_key=None)
        try:
            await self.admins[agency_id].publish(broker)
        finally:
            await broker.close()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for admin in self.admins.values():
            await admin.close()


async def start_network(aiohttp_server: Any, root: Path, **config: Any) -> Network:
    (root / "broker").mkdir(mode=0o700)
    key = SigningKey(secrets.token_bytes(32))
    app = create_app(ServerConfig(data_dir=root / "broker", **config), server_key=key)
    server = await aiohttp_server(app)
    return Network(server, app, root, key)
