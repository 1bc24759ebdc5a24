"""Fault injection: ``make chaos`` (``python -m bench.chaos``).

A real broker process serves several cases while senders post real sealed,
signed updates and followers verify every delivery with the real core.  The
broker is killed with SIGKILL at random moments and restarted on the same data.
Senders then retry with the very same bytes (a fixed message id); followers
reconnect and resume from the count of entries they verified.  Two more faults
happen under the same load: a backup is taken while the broker serves, and the
disk fills up (a size cap on the database) and then frees again.

At the end the checker compares three things: what the broker acknowledged (each
sender's signed receipts), what storage holds (the full log fetched from the
restarted broker and verified from genesis), and what each follower verified.

* **lost**: an acknowledged update is not in storage at the position its
  receipt names.  Must be 0.
* **doubled**: an update appears twice in a log.  Must be 0 (the core would
  refuse the log as a replay anyway).
* **forked**: a follower's verified log is not a prefix of the stored log, so
  it was delivered something that was later lost or saw another order.
  Must be 0.  This is how "nothing was delivered that was not acknowledged
  first" is checked: a delivery of an entry that was not yet durable shows up
  as a follower holding an entry that storage lost.
* **unverified**: a delivery the follower's core refused.  Must be 0.
* **redelivered**: an entry delivered again after the follower held it.
  Must be 0: a resumed stream starts exactly where the follower stopped.

Uploads ride in the same run (``--uploaders``, each a real ``Client`` posting
an update with a file of up to ``--upload-size`` bytes, one after another):
their traffic passes through ``bench.http_tap``, a loopback proxy that reads
the offsets the broker acknowledges and that cuts every connection at random
moments (``--cuts``, network cuts) besides the kills.  An interrupted post is
repeated with its idempotency key, which resumes its upload.  Two more counts:

* **upload bytes lost**: after a restart, an upload's offset (``GET
  .../uploads/{id}``, asked as its device) is below the highest offset the
  broker acknowledged for it before the kill.  Must be 0.
* **attachments failed**: an acknowledged post whose file a partner cannot
  save with ``Client.save_attachment`` (every chunk, the address and the
  SHA-256 verified) or whose saved bytes differ from the file posted.
  Must be 0, and every acknowledged post's file must be verified.

A retry that the broker answers with a receipt it signed before the retry was
sent is a **duplicate suppressed**: the first attempt was stored, its answer
lost in the kill.  The test-only fault switch CASELINE_TEST_ACK_BEFORE_COMMIT=1
makes the broker acknowledge before it commits; with it, the checker must
report lost updates (tests/test_chaos.py checks that it does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from caseline.crypto.caselog import KIND_UPDATE, CaseView, entry_hash, verify_receipt
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import Cursor, Delivery, Subscribe
from caseline.schemas.codec import unpack
from caseline.schemas.errors import CaselineError
from caseline.server.cli import ACK_BEFORE_COMMIT_ENV

from bench.chaos_uploads import Uploads, parse_size
from tests.support.broker import Officer
from tests.support.process import UrlClient, free_port
from tests.support.world import World

CONFIG = (
    "[server]\nheartbeat = 600.0\nidle_timeout = 3600.0\n"
    "[limits]\nupdates_per_second = 1000000.0\nupdate_burst = 1000000.0\n"
    "bytes_per_second = 1e12\nbytes_burst = 1e12\nconnections_per_device = 1000\n"
    "anonymous_per_second = 1e6\nanonymous_burst = 1e6\n"
)


@dataclasses.dataclass
class Tally:
    kills: int = 0
    sent: int = 0
    acked: int = 0
    retried: int = 0
    duplicates_suppressed: int = 0
    refused_disk_full: int = 0
    stuck_senders: int = 0
    delivered: int = 0
    redelivered: int = 0
    unverified: int = 0
    lost: int = 0
    doubled: int = 0
    forked: int = 0
    backup_missing: int = -1  # -1: no backup phase
    uploads_sent: int = 0
    uploads_acked: int = 0
    upload_retries: int = 0
    network_cuts: int = 0
    upload_offsets_checked: int = 0
    upload_bytes_lost: int = 0
    attachments_verified: int = 0
    attachments_failed: int = 0
    upload_errors: dict[str, int] = dataclasses.field(
        default_factory=dict
    )  # what the cuts made the client raise
    backup_cases_verified: int = 0
    stored_updates: int = 0
    seconds: float = 0.0

    def ok(self) -> bool:
        backup_ok = self.backup_missing <= 0
        uploads_ok = (
            not (self.upload_bytes_lost or self.attachments_failed)
            and self.attachments_verified == self.uploads_acked
        )
        return (
            not (self.lost or self.doubled or self.forked or self.unverified or self.redelivered)
            and backup_ok
            and uploads_ok
        )


class BrokerProcess:
    """``caseline-server serve`` on one data directory and port, killed and restarted at will."""

    def __init__(self, data: Path, port: int, *, fault: bool = False, config: str = CONFIG) -> None:
        self.data, self.port, self.fault, self.config = data, port, fault, config
        self.proc: asyncio.subprocess.Process | None = None
        self.up = asyncio.Event()
        self.generation = 0
        self._started = asyncio.Condition()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, max_bytes: int | None = None) -> None:
        env = {**os.environ, ACK_BEFORE_COMMIT_ENV: "1" if self.fault else "0"}
        env.pop("CASELINE_DB_MAX_BYTES", None)
        if max_bytes is not None:
            env["CASELINE_DB_MAX_BYTES"] = str(max_bytes)
        config = self.data / "chaos.toml"
        config.write_text(self.config)
        with (self.data / "broker.log").open("ab") as log:  # its JSON log, kept for a post-mortem
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "caseline.server.cli", "--config", str(config), "--data-dir",
                str(self.data), "serve", "--port", str(self.port),
                stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
            )  # fmt: skip
        assert self.proc.stdout is not None
        while b"caseline broker ready" not in (
            line := await asyncio.wait_for(self.proc.stdout.readline(), 60)
        ):
            if not line:
                raise RuntimeError("the broker exited during start-up")
        async with self._started:
            self.generation += 1
            self.up.set()
            self._started.notify_all()

    async def kill(self) -> None:
        assert self.proc is not None
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def next_start(self, generation: int) -> None:
        """Wait until the broker has been restarted since ``generation``."""
        async with self._started:
            await self._started.wait_for(lambda: self.generation > generation)


def setup(data: Path, world: World) -> None:
    """Initialise a data directory and register the world's agencies, as an operator would."""

    def cli(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    cli("init")
    for agency_id, root in world.roots.items():
        cli(
            "agency",
            "add",
            agency_id,
            "--name",
            agency_id,
            "--country",
            "KE",
            "--root-key",
            root.public_key.hex(),
        )


class Run:
    """One chaos run: the load, the faults, and what each side saw."""

    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args, self.data = args, data
        self.rng = random.Random(args.seed)
        self.world = World(f"chaos-{args.seed}")
        self.world.agency("ke-kra")
        self.world.agency("tz-tra")
        setup(data, self.world)
        self.server_key = SigningKey((data / "server.key").read_bytes())
        self.world.server_key = self.server_key
        self.broker = BrokerProcess(data, free_port(), fault=args.fault)
        self.tally = Tally()
        self.acked: dict[bytes, tuple[bytes, bytes]] = {}  # envelope -> (case_id, receipt)
        self.progress = asyncio.Condition()
        self.stop = asyncio.Event()
        self.cases: dict[bytes, list[Officer]] = {}
        self.views: list[tuple[bytes, CaseView]] = []  # followers' verified views
        self.active_senders = 0
        self.uploads = (
            Uploads(data.parent / "uploads", self.broker, self.world, self.tally, uploaders=args.uploaders,
                    size=args.upload_size, part_size=args.part_size, seed=args.seed)
            if args.uploaders
            else None
        )  # fmt: skip

    # ------------------------------------------------------------------ load
    async def prepare(self, session: aiohttp.ClientSession) -> None:
        client = UrlClient(session, self.broker.base)
        per_case = self.args.senders + self.args.followers
        for c in range(self.args.cases):
            officers = [
                await Officer(
                    client, self.world, self.world.device("ke-kra" if i % 2 else "tz-tra", f"c{c}m{i}"),
                    self.server_key,
                ).enrol()
                for i in range(per_case)
            ]  # fmt: skip
            case_id = await officers[0].create_case([(o.device, "member") for o in officers[1:]])
            for o in officers[1:]:
                await asyncio.wait_for(o.sync(case_id, at_least=1), timeout=30)  # the genesis, readable
            self.cases[case_id] = officers
        if self.uploads is not None:
            await self.uploads.prepare()

    async def send(self, officer: Officer, case_id: bytes) -> None:
        self.active_senders += 1
        try:
            await self._send(officer, case_id)
        finally:
            async with self.progress:
                self.active_senders -= 1
                self.progress.notify_all()

    async def _send(self, officer: Officer, case_id: bytes) -> None:
        """Post updates one after another; each is retried with its own bytes until acknowledged."""
        n = 0
        while not self.stop.is_set():
            envelope = officer.seal(case_id, f"{officer.device.user} update {n} " + "x" * 600)
            n += 1
            self.tally.sent += 1
            attempts = 0
            while True:
                await self.broker.up.wait()
                generation = self.broker.generation
                if attempts:
                    self.tally.retried += 1
                attempts += 1
                sent_ms = int(time.time() * 1000)
                try:
                    async with await officer.post(case_id, envelope) as r:
                        status, body = r.status, await r.read()
                except (TimeoutError, aiohttp.ClientError):
                    await self.broker.next_start(generation)
                    continue
                if status == 201:
                    if attempts > 1 and verify_receipt(body, self.server_key.public_key).time < sent_ms:
                        self.tally.duplicates_suppressed += (
                            1  # stored before the kill; only its answer was lost
                        )
                    self.acked[envelope] = (case_id, body)
                    async with self.progress:
                        self.tally.acked += 1
                        self.progress.notify_all()
                    break
                if status == 507:
                    self.tally.refused_disk_full += 1
                    async with self.progress:
                        self.progress.notify_all()
                    await self.broker.next_start(generation)
                elif status == 401:
                    await self.relogin(officer)  # sessions outlive restarts, but not forever
                elif status == 503:
                    await asyncio.sleep(0.05)  # a transient answer: back off a little, then retry
                elif status == 409 and self.args.fault:
                    # The fault lost an acknowledged update, so this sender's next position
                    # no longer follows what the broker holds: it cannot go on.
                    self.tally.stuck_senders += 1
                    return
                else:
                    raise RuntimeError(f"post answered {status}: {body[:300]!r}")

    async def follow(self, session: aiohttp.ClientSession, officer: Officer, case_id: bytes) -> None:
        """Verify every delivery with the real core; after a cut, resume from what was verified."""
        view = CaseView(trust=self.world.trust(), me=officer.device.keys)
        self.views.append((case_id, view))
        while True:
            await self.broker.up.wait()
            generation = self.broker.generation
            try:
                async with session.ws_connect(
                    f"{self.broker.base}/v1/stream",
                    headers={"Authorization": f"Bearer {officer.token}"},
                    max_msg_size=1 << 20,
                ) as ws:
                    await ws.send_bytes(
                        Subscribe(cursors=(Cursor(case_id=case_id, after=view.count),)).encode()
                    )
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.BINARY or unpack(msg.data)[1] != Delivery.TAG:
                            continue
                        entry = Delivery.decode(msg.data).entry
                        self.tally.delivered += 1
                        if entry.seq < view.count:
                            self.tally.redelivered += 1
                            continue
                        try:
                            view.apply(
                                seq=entry.seq, kind=entry.kind, body=entry.body, now=self.world.now,
                                receipt=entry.receipt,
                            )  # fmt: skip
                        except CaselineError:
                            self.tally.unverified += 1
                            return
                        async with self.progress:
                            self.progress.notify_all()
                if ws.close_code in (1008, 4001):
                    await self.relogin(officer)
            except (TimeoutError, aiohttp.ClientError):
                pass
            if not self.broker.up.is_set() or self.broker.generation != generation:
                await self.broker.next_start(generation)

    async def relogin(self, officer: Officer) -> None:
        generation = self.broker.generation
        try:
            await officer.login()
        except (TimeoutError, aiohttp.ClientError):
            await self.broker.next_start(generation)

    # ------------------------------------------------------------------ faults
    async def until(self, predicate: Any, timeout: float = 120) -> None:
        async with self.progress:
            await asyncio.wait_for(self.progress.wait_for(predicate), timeout=timeout)

    async def until_acked(self, count: int) -> None:
        """Until ``count`` updates are acknowledged (or no sender can go on: the fault run)."""
        await self.until(lambda: self.tally.acked >= count or not self.active_senders)

    async def kill_and_restart(self, *, max_bytes: int | None = None) -> None:
        acked = self.uploads.in_progress() if self.uploads else {}
        await self.broker.kill()
        self.tally.kills += 1
        await self.broker.start(max_bytes=max_bytes)
        if self.uploads is not None:
            await self.uploads.check_after_restart(acked)

    async def backup(self) -> tuple[Path, dict[bytes, tuple[bytes, bytes]]]:
        """``caseline-server backup`` while the senders keep posting."""
        before = dict(self.acked)
        dest = self.data.parent / "backup.sqlite3"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "caseline.server.cli", "--data-dir", str(self.data), "backup", str(dest),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"backup failed: {err.decode()}")
        return dest, before

    async def fill_the_disk(self) -> None:
        """Restart with the database capped at its current size, then give the space back."""
        acked = self.uploads.in_progress() if self.uploads else {}
        await self.broker.kill()
        self.tally.kills += 1
        db = self.data / "broker.sqlite3"
        with sqlite3.connect(db) as conn:  # fold the WAL in: the file is now the whole database
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        refused = self.tally.refused_disk_full
        await self.broker.start(max_bytes=db.stat().st_size + 4096)
        if self.uploads is not None:
            await self.uploads.check_after_restart(acked)
        await self.until(lambda: self.tally.refused_disk_full >= refused + 3 or not self.active_senders)
        await self.kill_and_restart()

    async def chaos(self) -> tuple[Path, dict[bytes, tuple[bytes, bytes]]] | None:
        backup = None
        for k in range(self.args.kills):
            await self.until_acked(self.tally.acked + self.args.progress)
            if not self.active_senders:
                break
            await asyncio.sleep(self.rng.uniform(0, self.args.max_pause))  # a random moment, not a wait
            if self.uploads is not None and k < self.args.cuts:
                self.uploads.cut()  # a network cut between the uploaders and the broker
                await asyncio.sleep(self.rng.uniform(0, self.args.max_pause))
            if self.args.backup and k == self.args.kills // 2:
                backup = await self.backup()
            if self.args.disk_full and k == (3 * self.args.kills) // 4:
                await self.fill_the_disk()
            else:
                await self.kill_and_restart()
        await self.until_acked(self.tally.acked + self.args.progress)
        return backup

    # ------------------------------------------------------------------ checking
    async def stored_logs(self, base: str) -> dict[bytes, CaseView]:
        """Every case's full log from storage, verified from genesis by a fresh view."""
        logs = {}
        async with aiohttp.ClientSession() as session:
            client = UrlClient(session, base)
            for case_id, officers in self.cases.items():
                reader = Officer(client, self.world, officers[-1].device, self.server_key)
                await reader.login()
                logs[case_id] = await reader.sync(case_id)
        return logs

    def check(self, logs: dict[bytes, CaseView]) -> None:
        t = self.tally
        for envelope, (case_id, receipt) in self.acked.items():
            r = verify_receipt(receipt, self.server_key.public_key)
            log = logs[case_id]
            if (
                r.seq >= log.count
                or log.entry_hashes[r.seq] != r.entry_hash
                or entry_hash(KIND_UPDATE, envelope) != r.entry_hash
            ):
                t.lost += 1
        for log in logs.values():
            t.stored_updates += log.count - 1 - (log.state.epoch if log.state else 0)
            t.doubled += log.count - len(set(log.entry_hashes))
        for case_id, view in self.views:
            stored = logs[case_id].entry_hashes
            if view.entry_hashes != stored:  # caught up, same entries, same order
                t.forked += 1

    async def check_backup(self, path: Path, before: dict[bytes, tuple[bytes, bytes]]) -> None:
        """Restore the backup into a new data directory; that broker must serve every case it held."""
        restored = self.data.parent / "restored"
        restored.mkdir(mode=0o700)
        shutil.copy2(self.data / "server.key", restored / "server.key")
        shutil.copy2(path, restored / "broker.sqlite3")
        broker = BrokerProcess(restored, free_port())
        await broker.start()
        try:
            logs = await self.stored_logs(broker.base)
        finally:
            await broker.kill()
        self.tally.backup_cases_verified = len(logs)
        self.tally.backup_missing = 0
        for envelope, (case_id, receipt) in before.items():
            r = verify_receipt(receipt, self.server_key.public_key)
            log = logs[case_id]
            if r.seq >= log.count or log.entry_hashes[r.seq] != entry_hash(KIND_UPDATE, envelope):
                self.tally.backup_missing += 1

    async def run(self) -> Tally:
        started = time.perf_counter()
        await self.broker.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await self.prepare(session)
            senders, followers = [], []
            for case_id, officers in self.cases.items():
                n = self.args.senders
                senders += [asyncio.create_task(self.send(o, case_id)) for o in officers[:n]]
                followers += [asyncio.create_task(self.follow(session, o, case_id)) for o in officers[n:]]
            uploaders = []
            if self.uploads is not None:
                uploaders = [
                    asyncio.create_task(self.uploads.upload(i, self.stop, self.progress))
                    for i in range(self.args.uploaders)
                ]
            tasks = senders + followers + uploaders
            try:
                backup = await self.chaos()
                self.stop.set()
                await asyncio.wait_for(asyncio.gather(*senders, *uploaders), timeout=120)
                if self.uploads is not None:
                    await self.uploads.verify()
                logs = await self.stored_logs(self.broker.base)
                counts = {case_id: log.count for case_id, log in logs.items()}
                # Followers catch up with storage; one that cannot (it was refused or
                # forked) is caught by the check below.
                with contextlib.suppress(TimeoutError):
                    await self.until(lambda: all(v.count >= counts[c] for c, v in self.views), timeout=30)
                await self.broker.kill()
                self.check(logs)
                if backup is not None:
                    await self.check_backup(*backup)
            finally:
                for task in tasks:
                    task.cancel()
                if self.broker.up.is_set():
                    await self.broker.kill()
                if self.uploads is not None:
                    await self.uploads.close()
        self.tally.seconds = round(time.perf_counter() - started, 1)
        return self.tally


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the run (at least 20 for the issue)")
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--senders", type=int, default=3, help="posting members per case")
    p.add_argument("--followers", type=int, default=2, help="following members per case")
    p.add_argument("--progress", type=int, default=10, help="acknowledged updates between kills, at least")
    p.add_argument("--max-pause", type=float, default=0.3, help="then a random pause up to this many seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--uploaders", type=int, default=1, help="devices posting updates with a file each")
    p.add_argument(
        "--upload-size", type=parse_size, default=8 * 1024 * 1024, help="files of half to all of this"
    )
    p.add_argument(
        "--part-size",
        type=parse_size,
        default=1024 * 1024,
        help="the uploaders' PATCH size (more parts, more cuts)",
    )
    p.add_argument(
        "--cuts", type=int, default=1_000_000, help="network cuts of the uploads, one before each kill"
    )
    p.add_argument("--no-backup", dest="backup", action="store_false")
    p.add_argument("--no-disk-full", dest="disk_full", action="store_false")
    p.add_argument(
        "--fault", action="store_true", help="test only: the broker acknowledges before it commits"
    )
    p.add_argument("--dir", type=Path, help="keep the data here (default: a temporary directory)")
    return p.parse_args(argv)


async def chaos_run(args: argparse.Namespace, workdir: Path) -> Tally:
    data = workdir / "broker"
    data.mkdir(mode=0o700, parents=True)
    return await Run(args, data).run()


def summary(t: Tally) -> str:
    return (
        f"{t.kills} kills in {t.seconds} s; sent {t.sent}, acknowledged {t.acked}, retried {t.retried}, "
        f"duplicates suppressed {t.duplicates_suppressed}, refused while the disk was full "
        f"{t.refused_disk_full}; lost {t.lost}, doubled {t.doubled}, forked followers {t.forked}, "
        f"unverified deliveries {t.unverified}, redelivered {t.redelivered}; backup: "
        f"{t.backup_cases_verified} cases verified, {max(t.backup_missing, 0)} updates missing; "
        f"uploads: sent {t.uploads_sent}, acknowledged {t.uploads_acked}, retried {t.upload_retries}, "
        f"network cuts {t.network_cuts}, acknowledged offsets checked after a kill "
        f"{t.upload_offsets_checked}, short {t.upload_bytes_lost}; attachments verified "
        f"{t.attachments_verified}, failed {t.attachments_failed}"
    )


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory() as tmp:
        tally = asyncio.run(chaos_run(args, args.dir or Path(tmp)))
    print(json.dumps(dataclasses.asdict(tally), indent=1))
    verdict = "PASS" if tally.ok() else "FAIL"
    print(f"{verdict}: {summary(tally)}")
    sys.exit(0 if tally.ok() else 1)


if __name__ == "__main__":
    main()
