"""A witnessed deployment of real processes on loopback, for the attack tests.

* the broker: ``caseline-server serve`` (``tests.support.process.Server``), on a
  data directory the test may stop, copy, edit and restart, as an operator could;
* one witness per agency: ``caseline-witness serve``, each on its own data
  directory, told the broker log's vkey (``caseline-server log vkey``);
* two agencies (ke-kra, tz-tra) with administrators (``AgencyAdmin``), each
  publishing its root-signed witness list, and an officer of each enrolled
  through the library (``Client``), as ``tests.support.agencies`` does in-process;
* a witnessed case between the two officers, alarm bound 1 s;
* ``Member.run``: the real ``caseline`` CLI against an officer's profile.

Readiness is always an event (a line a process prints, or a command's exit), never
a fixed sleep.  ``WitnessedNetwork.close`` stops every process it started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from caseline.client.admin import AgencyAdmin
from caseline.client.client import Client
from caseline.client.transport import BrokerConnection
from caseline.crypto.keys import SigningKey
from caseline.crypto.note import parse_vkey
from caseline.schemas.wire import Witness

from tests.support.agencies import PARTNERS, PASSPHRASE
from tests.support.clirun import cli, cli_home
from tests.support.process import Server, free_port
from tests.support.process import cli as server_cli

#: Alarm bound of the test case, as issue 12 asks (1 s).
ALARM_AFTER_MS: Final = 1000
EXIT_SPLIT_VIEW: Final = 3


def witness_cli(data_dir: Path, *args: str) -> str:
    """Run one ``caseline-witness`` operator command."""
    out = subprocess.run(
        [sys.executable, "-m", "caseline.witness.cli", "--data-dir", str(data_dir), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


def log_vkey(broker_dir: Path) -> str:
    """The broker log's vkey, as ``caseline-server log vkey`` prints it for witness operators."""
    for line in server_cli(broker_dir, "log", "vkey").splitlines():
        if line.startswith("vkey: "):
            return line.removeprefix("vkey: ").strip()
    raise AssertionError("caseline-server log vkey printed no vkey")


class WitnessProcess:
    """A real ``caseline-witness serve`` process on its own data directory."""

    def __init__(self, data_dir: Path, name: str, port: int | None = None) -> None:
        self.data_dir, self.name = data_dir, name
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.vkey = ""
        self.fingerprint = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def init(self, *log_vkeys: str) -> None:
        witness_cli(self.data_dir, "init", "--name", self.name)
        for v in log_vkeys:
            witness_cli(self.data_dir, "log", "add", v)
        self.vkey = witness_cli(self.data_dir, "vkey").strip()
        self.fingerprint = witness_cli(self.data_dir, "fingerprint").strip()

    @property
    def public_key(self) -> bytes:
        return parse_vkey(self.vkey)[2]

    def listed(self, url: str | None = None) -> Witness:
        """This witness as its agency lists it (``url``: list it somewhere else, e.g. a dead port)."""
        return Witness(name=self.name, public_key=self.public_key, url=url or self.url)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "caseline.witness.cli",
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        while True:  # the event: aiohttp's start-up line, which it prints once it listens
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
            if not line:
                raise RuntimeError(f"witness {self.name} exited during start-up")
            if line.strip() == b"ready":
                return

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclasses.dataclass
class Member:
    """An officer's device: a library ``Client`` for set-up, and the CLI for everything else."""

    agency_id: str
    user: str
    directory: Path

    @property
    def home(self) -> Path:
        return cli_home(self.directory)[0]

    @property
    def profile(self) -> str:
        return self.directory.name

    @property
    def alarms(self) -> Path:
        return self.directory / "alarms"

    async def run(self, *args: str) -> tuple[int, str, str]:
        """The real ``caseline`` CLI on this device's profile: (exit code, stdout, stderr)."""
        return await cli(self.home, "--profile", self.profile, *args)

    async def open(self) -> Client:
        return await Client.open(self.directory, passphrase=PASSPHRASE)


def alarm_proofs(member: Member) -> list[str]:
    """The split-view proof files the member's profile saved (their text)."""
    if not member.alarms.exists():
        return []
    return [p.read_text() for p in sorted(member.alarms.iterdir())]


def copy_broker(src: Path, dest: Path) -> Path:
    """Copy a stopped broker's data directory (database, WAL, key) as an operator could."""
    shutil.copytree(src, dest)
    return dest


async def until_exit(
    run: Callable[[], Awaitable[tuple[int, str, str]]],
    code: int,
    *,
    within: float,
) -> tuple[int, str, str]:
    """Re-run a command until it exits with ``code``, for at most ``within`` seconds.

    The event waited for is the command's own answer; each attempt is a whole
    CLI process, so no extra pause is needed between attempts.
    """
    deadline = time.monotonic() + within
    while True:
        result = await run()
        if result[0] == code or time.monotonic() > deadline:
            return result


class WitnessedNetwork:
    """The broker, two witnesses, two agencies with admins, one officer each, and a witnessed case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker_dir = root / "broker"
        self.broker = Server(self.broker_dir, free_port())
        self.brokers: list[Server] = [self.broker]
        self.witnesses: dict[str, WitnessProcess] = {
            agency: WitnessProcess(root / f"witness-{agency}", f"witness.{agency}.example/w1")
            for agency, *_ in PARTNERS
        }
        self.admins: dict[str, AgencyAdmin] = {}
        self.members: dict[str, Member] = {}
        self.case_id = b""
        self.server_key: SigningKey | None = None

    @property
    def url(self) -> str:
        return self.broker.url

    @property
    def case(self) -> str:
        return self.case_id.hex()

    @property
    def kra(self) -> Member:
        return self.members["ke-kra"]

    @property
    def tra(self) -> Member:
        return self.members["tz-tra"]

    # ------------------------------------------------------------------ set-up
    async def start(self, *, witnessed: bool = True) -> None:
        """Build everything from nothing and leave the broker and witnesses running."""
        server_cli(self.broker_dir, "init")
        self.server_key = SigningKey((self.broker_dir / "server.key").read_bytes())
        vkey = log_vkey(self.broker_dir)
        for agency_id, name, country in PARTNERS:
            admin = await AgencyAdmin.create(
                self.root / f"admin-{agency_id}", agency_id, passphrase=PASSPHRASE, kdf="interactive"
            )
            self.admins[agency_id] = admin
            server_cli(  # the operator's step, after reading the fingerprint back by phone
                self.broker_dir,
                "agency",
                "add",
                agency_id,
                "--name",
                name,
                "--country",
                country,
                "--root-key",
                admin.root.public_key.hex(),
            )
        await asyncio.gather(*(asyncio.to_thread(w.init, vkey) for w in self.witnesses.values()))
        await self.resume()
        for agency_id, admin in self.admins.items():
            await admin.set_witnesses([self.witnesses[agency_id].listed()])
        users = {"ke-kra": "alice", "tz-tra": "juma"}
        clients = {a: await self._enrol(a, u) for a, u in users.items()}
        try:
            owner = clients["ke-kra"]
            self.case_id = await owner.create_case(
                title="Operation Kilimanjaro",
                reference="KE-2026-0042",
                members=[("tz-tra", "juma")],
                witnessed=witnessed,
                alarm_after_ms=ALARM_AFTER_MS,
            )
            await clients["tz-tra"].sync(self.case_id)
        finally:
            for c in clients.values():
                await c.close()

    async def resume(self) -> None:
        """Start the broker and the witnesses on their data (each readiness an event)."""
        await asyncio.gather(self.broker.start(), *(w.start() for w in self.witnesses.values()))

    def clone(self, root: Path) -> WitnessedNetwork:
        """A copy of this (stopped) network's every directory under ``root``, on the same ports.

        Building a network costs a dozen process starts; each test starts from a copy of
        one built once.  The copy keeps the ports, which every profile and witness list
        names; the processes it starts are its own.
        """
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns("cli-home-*"))
        twin = WitnessedNetwork(root)
        twin.broker = Server(twin.broker_dir, self.broker.port)
        twin.brokers = [twin.broker]
        for agency_id, w in self.witnesses.items():
            mine = twin.witnesses[agency_id]
            mine.port, mine.vkey, mine.fingerprint = w.port, w.vkey, w.fingerprint
        twin.members = {
            a: Member(m.agency_id, m.user, root / m.directory.relative_to(self.root))
            for a, m in self.members.items()
        }
        twin.case_id, twin.server_key = self.case_id, self.server_key
        return twin

    async def admin(self, agency_id: str) -> AgencyAdmin:
        if agency_id not in self.admins:
            self.admins[agency_id] = await AgencyAdmin.open(
                self.root / f"admin-{agency_id}", passphrase=PASSPHRASE
            )
        return self.admins[agency_id]

    async def publish(self, agency_id: str, url: str | None = None) -> None:
        broker = BrokerConnection(url or self.url, keys=None, server_key=None)
        try:
            await (await self.admin(agency_id)).publish(broker)
        finally:
            await broker.close()

    async def enrol(self, agency_id: str, user: str) -> tuple[Member, Client]:
        """Enrol one more device (not in any case), as its agency's administrator does."""
        client = await self._enrol(agency_id, user, register=False)
        return Member(agency_id, user, client.directory), client

    async def _enrol(self, agency_id: str, user: str, *, register: bool = True) -> Client:
        admin = await self.admin(agency_id)
        directory = self.root / f"{agency_id}-{user}-{secrets.token_hex(2)}"
        client = await Client.create(
            directory,
            agency_id=agency_id,
            user_id=user,
            server_url=self.url,
            passphrase=PASSPHRASE,
            kdf="interactive",
        )
        try:
            cert = await admin.issue(await client.enrolment_request(), role="officer")
            await self.publish(agency_id)
            await client.trust_add(agency_id, admin.fingerprint)
            assert self.server_key is not None
            await client.login(cert=cert, server_key=self.server_key.public_key)
            for other in self.admins.values():
                await client.trust_add(other.agency_id, other.fingerprint)
        except BaseException:
            await client.close()
            raise
        if register:
            self.members[agency_id] = Member(agency_id, user, directory)
        return client

    # ------------------------------------------------------------------ the operator's moves
    async def stop_broker(self) -> None:
        for b in self.brokers:
            await b.stop()

    async def start_broker(self, data_dir: Path | None = None) -> Server:
        """Start another broker process (on ``data_dir``, default the original one) and return it."""
        if data_dir is None or data_dir == self.broker_dir:
            self.broker = Server(self.broker_dir, self.broker.port)  # the URL members know
            server = self.broker
        else:
            server = Server(data_dir, free_port())
        self.brokers.append(server)
        await server.start()
        return server

    async def point(self, member: Member, server: Server) -> None:
        """Route a member's device to ``server`` (what DNS or a proxy does for a forking operator)."""
        code, out, err = await member.run("login", "--server", server.url)
        assert code == 0, out + err

    async def close(self) -> None:
        """Stop every process this network started, and close the administrators' stores."""
        for b in self.brokers:
            await b.stop()
        for w in self.witnesses.values():
            await w.stop()
        for admin in self.admins.values():
            await admin.close()
        self.admins = {}


@asynccontextmanager
async def witnessed_network(root: Path, *, witnessed: bool = True) -> AsyncIterator[WitnessedNetwork]:
    """A network built from nothing, running; stopped on the way out."""
    net = WitnessedNetwork(root)
    try:
        await net.start(witnessed=witnessed)
        yield net
    finally:
        await net.close()


def build_template(root: Path) -> WitnessedNetwork:
    """Build a network once, stop it, and return it for ``clone`` (synchronous: for fixtures)."""

    async def build() -> WitnessedNetwork:
        net = WitnessedNetwork(root)
        try:
            await net.start()
        finally:
            await net.close()
        return net

    return asyncio.run(build())


@asynccontextmanager
async def running_copy(template: WitnessedNetwork, root: Path) -> AsyncIterator[WitnessedNetwork]:
    """A running copy of a built network; every process it started is stopped on the way out."""
    net = template.clone(root)
    try:
        await net.resume()
        yield net
    finally:
        await net.close()
