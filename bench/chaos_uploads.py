"""Uploads in ``make chaos``: real ``Client`` posts with files, cut by kills and network cuts.

``bench.chaos`` drives this alongside its senders and followers: the uploaders
post one update with one file after another through ``bench.http_tap`` (which
reads what the broker acknowledged and can cut every connection at once); an
interrupted post is repeated with its idempotency key, so the client resumes
its upload from the broker's offset.  Around every broker kill the acknowledged
offsets of uploads in progress are compared with what the restarted broker
holds, and at the end a partner saves every acknowledged post's file, verified.
bench/chaos.py's docstring says what each count means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from caseline.client.client import Client
from caseline.client.transport import BrokerConnection
from caseline.schemas.api import UploadState

from bench.devices import enrol_device, publish_crls
from bench.http_tap import HttpTap
from tests.support.world import World, note

#: Attempts at one post before the uploader gives up and the run fails (a stuck client).
MAX_ATTEMPTS: Final = 200
PIECE: Final = 1024 * 1024


class Broker(Protocol):
    """What this needs of ``bench.chaos.BrokerProcess``."""

    up: asyncio.Event
    generation: int

    @property
    def base(self) -> str: ...

    @property
    def port(self) -> int: ...

    async def next_start(self, generation: int) -> None: ...


def parse_size(text: str) -> int:
    """``1GiB``, ``256MiB``, ``200KiB`` or a number of bytes."""
    found = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"a size like 1GiB, 256MiB or 4096, not {text!r}")
    unit = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}.get(found.group(2) or "B", 1)
    return int(found.group(1)) * unit


def write_random(path: Path, size: int) -> str:
    """``size`` random bytes written in 1 MiB pieces; their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(PIECE, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


class Uploads:
    """The uploaders' case, their clients, the tap, and what was acknowledged to them."""

    def __init__(
        self,
        root: Path,
        broker: Broker,
        world: World,
        tally: Any,
        *,
        uploaders: int,
        size: int,
        part_size: int | None,
        seed: int,
    ) -> None:
        self.root, self.broker, self.world, self.tally = root, broker, world, tally
        self.count, self.size, self.part_size = uploaders, size, part_size
        self.rng = random.Random(seed)
        self.tap = HttpTap(broker.port)
        self.files = root / "files"
        self.clients: list[Client] = []
        self.reader: Client | None = None
        self.tokens: list[str] = []
        self.case = b""
        self.acked: list[tuple[bytes, str]] = []  # (update id, the file's SHA-256)
        self.errors: dict[str, int] = tally.upload_errors

    async def prepare(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        await self.tap.start()
        await publish_crls(self.world, self.broker.base)
        home = self.root / "home"
        for i in range(self.count):
            client = await enrol_device(
                self.world, self.tap.base, home, key_dir=self.root, agency="ke-kra", user=f"u{i}"
            )
            if self.part_size:
                client.upload_part_size = self.part_size  # more parts: more cuts land mid-upload
            self.clients.append(client)
        self.reader = await enrol_device(
            self.world, self.broker.base, home, key_dir=self.root, agency="tz-tra", user="reader"
        )
        members = [("ke-kra", f"u{i}") for i in range(1, self.count)] + [("tz-tra", "reader")]
        self.case = await self.clients[0].create_case(title="Op. Cut Cables", members=members)
        for c in [*self.clients[1:], self.reader]:
            await c.sync(self.case)
        self.tokens = [await self._login(c) for c in self.clients]

    async def _login(self, client: Client) -> str:
        got: list[str] = []

        async def keep(session: Any) -> None:
            if session is not None:
                got.append(session.token)

        conn = BrokerConnection(self.broker.base, keys=client.keys, server_key=client.server_key)
        conn.on_session = keep
        try:
            await conn.login()
        finally:
            await conn.close()
        return got[-1]

    async def upload(self, index: int, stop: asyncio.Event, progress: asyncio.Condition) -> None:
        """Post one update with one file after another until ``stop``; each until acknowledged."""
        client = self.clients[index]
        n = 0
        while not stop.is_set():
            n += 1
            path = self.files / f"u{index}-{n}.bin"
            sha = write_random(path, self.rng.randint(max(1, self.size // 2), self.size))
            self.tally.uploads_sent += 1
            for _attempt in range(MAX_ATTEMPTS):
                await self.broker.up.wait()
                generation = self.broker.generation
                try:
                    posted = await client.post(
                        self.case, "note", note(f"u{index} file {n}"), attachments=[str(path)],
                        idempotency_key=f"chaos-u{index}-{n}",
                    )  # fmt: skip
                except Exception as exc:  # whatever the cut made the client raise: counted, retried
                    kind = type(exc).__name__
                    self.errors[kind] = self.errors.get(kind, 0) + 1
                    self.tally.upload_retries += 1
                    if self.broker.up.is_set() and self.broker.generation == generation:
                        await asyncio.sleep(0.05)  # a network cut or a full disk: back off a little
                    elif not self.broker.up.is_set():
                        await self.broker.next_start(generation)
                    continue
                break
            else:
                raise RuntimeError(f"uploader {index} gave up after {MAX_ATTEMPTS} attempts: {self.errors}")
            self.acked.append((posted.update_id, sha))
            async with progress:
                self.tally.uploads_acked += 1
                progress.notify_all()

    def cut(self) -> None:
        self.tap.cut()
        self.tally.network_cuts += 1

    def in_progress(self) -> dict[str, int]:
        """Uploads the broker has acknowledged part of and not all: upload id (hex) -> offset."""
        t = self.tap.tally
        return {u: off for u, off in t.acked.items() if off < t.lengths.get(u, off + 1)}

    async def check_after_restart(self, acked: dict[str, int]) -> None:
        """Every offset acknowledged before the kill is still there (``acked``: from ``in_progress``)."""
        if not acked:
            return
        async with aiohttp.ClientSession() as session:
            for upload, offset in acked.items():
                stored = await self._offset(session, upload)
                self.tally.upload_offsets_checked += 1
                if stored is None or stored < offset:
                    self.tally.upload_bytes_lost += 1

    async def _offset(self, session: aiohttp.ClientSession, upload: str) -> int | None:
        url = f"{self.broker.base}/v1/cases/{self.case.hex()}/uploads/{upload}"
        for i, client in enumerate(self.clients):  # the upload is its own device's: ask each
            for _ in range(2):
                headers = {"Authorization": f"Bearer {self.tokens[i]}"}
                async with session.get(url, headers=headers) as r:
                    body = await r.read()
                    if r.status == 401:
                        self.tokens[i] = await self._login(client)
                        continue
                    if r.status == 200:
                        return int(UploadState.decode(body).offset)
                    break
        return None

    async def verify(self) -> None:
        """The partner saves every acknowledged post's file (verified) and compares its bytes."""
        assert self.reader is not None
        await self.reader.sync(self.case)
        out = self.root / "saved"
        out.mkdir(exist_ok=True)
        for update_id, sha in self.acked:
            try:
                saved = await self.reader.save_attachment(self.case, update_id, 0, out)
            except Exception as exc:  # a failed verification is what this counts
                self.errors[f"save: {type(exc).__name__}"] = (
                    self.errors.get(f"save: {type(exc).__name__}", 0) + 1
                )
                self.tally.attachments_failed += 1
                continue
            if file_sha256(saved) == sha:
                self.tally.attachments_verified += 1
            else:
                self.tally.attachments_failed += 1
            saved.unlink()

    async def close(self) -> None:
        for c in [*self.clients, *([self.reader] if self.reader else [])]:
            with contextlib.suppress(Exception):
                await c.close()
        await self.tap.close()
