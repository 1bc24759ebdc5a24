"""Real client profiles for the benches: enrolled as an officer's device is, on a real broker.

Shared by ``bench.coldstart``, ``bench.abuse``, ``bench.attachments`` and
``bench.chaos`` (its uploaders), so that each drives ``caseline.client.Client``
exactly as an officer's device would, with certificates from the bench's own
agency roots.
"""

from __future__ import annotations

from pathlib import Path

from caseline.client.client import Client
from caseline.client.profile import profile_dir
from caseline.client.transport import BrokerConnection
from caseline.crypto.certs import issue_device_cert, issue_revocation_list
from caseline.crypto.keys import fingerprint

from tests.support.world import YEAR, World


async def enrol_device(
    world: World, base: str, home: Path, *, key_dir: Path, agency: str, user: str
) -> Client:
    """A real profile for ``user`` of ``agency``: created, every root pinned, certified, logged in."""
    directory = profile_dir(user, home=home)
    client = await Client.create(
        directory,
        agency_id=agency,
        user_id=user,
        server_url=base,
        key_file=key_dir / f"{user}.key",
    )
    for agency_id, root in world.roots.items():
        await client.trust_add(agency_id, fingerprint(agency_id, root.public_key), root_key=root.public_key)
    world.serial += 1
    cert = issue_device_cert(
        world.roots[agency],
        user_id=user,
        role="officer",
        sign_key=client.keys.sign_public,
        kem_key=client.keys.kem_public,
        not_before=world.now - 60_000,
        not_after=world.now + YEAR,
        serial=world.serial,
    )
    await client.login(cert=cert)
    return client


async def publish_crls(world: World, base: str) -> None:
    """Each agency's first (empty) revocation list, PUT to the broker as the agency would."""
    broker = BrokerConnection(base, keys=None, server_key=None)
    try:
        for root in world.roots.values():
            crl = issue_revocation_list(root, number=1, issued_at=world.now, entries=[])
            await broker.put_revocations(root.agency_id, crl)
    finally:
        await broker.close()
