"""``BlobStore`` on the local file system: ``<data-dir>/blobs/``.

Complete blobs are content-addressed files ``ab/cd/<hex address>``; uploads in
progress are ``uploads/<hex upload id>``.  Every file operation runs in a
thread, in chunks of at most ``blobs.IO_CHUNK``, so neither the event loop nor
memory depends on a blob's size.  Durability: a file is fsync'd before any
answer relies on it, and a rename is followed by an fsync of the directories
it touched, so a crash leaves either the upload or the blob, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from caseline.server.blobs import IO_CHUNK, Address, UploadId

BLOBS_DIR = "blobs"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._file.write, data)

    async def close(self) -> None:
        def sync_and_close() -> None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()

        await asyncio.to_thread(sync_and_close)


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class FileBlobStore:
    """``BlobStore`` on one directory; safe for concurrent use on different uploads and addresses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"

    def upload_path(self, upload: UploadId) -> Path:
        return self.uploads / upload.hex()

    def blob_path(self, address: Address) -> Path:
        text = address.hex()
        return self.root / text[:2] / text[2:4] / text

    async def open_upload(self, upload: UploadId, offset: int) -> _FileWriter:
        path = self.upload_path(upload)

        def open_at() -> BinaryIO:
            self.uploads.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            file = os.fdopen(fd, "r+b", buffering=0)
            try:
                if file.seek(0, os.SEEK_END) < offset:
                    raise FileNotFoundError("the upload holds fewer bytes than its recorded offset")
                file.truncate(offset)  # bytes past the acknowledged offset were never acknowledged
                file.seek(offset)
                if created:
                    _fsync_dir(self.uploads)
            except BaseException:
                file.close()
                raise
            return file

        opening = asyncio.ensure_future(asyncio.to_thread(open_at))
        try:
            return _FileWriter(await asyncio.shield(opening))
        except asyncio.CancelledError:
            # The request was cancelled while the thread opened the file: close it once it is
            # open, rather than leave a descriptor for the garbage collector.
            opening.add_done_callback(_close_opened)
            raise

    async def read_upload(self, upload: UploadId) -> AsyncIterator[bytes]:
        async for chunk in self._read(self.upload_path(upload), 0, None):
            yield chunk

    async def has_upload(self, upload: UploadId) -> bool:
        return await asyncio.to_thread(self.upload_path(upload).exists)

    async def commit_upload(self, upload: UploadId, address: Address) -> None:
        source, target = self.upload_path(upload), self.blob_path(address)

        def move() -> None:
            if not source.exists():
                return  # moved already (a retry after a crash between rename and bookkeeping)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb") as f:
                os.fsync(f.fileno())
            if target.exists():  # the same ciphertext again: one copy is enough
                source.unlink()
            else:
                os.replace(source, target)
                _fsync_dir(target.parent)
            _fsync_dir(self.uploads)

        await asyncio.to_thread(move)

    async def delete_upload(self, upload: UploadId) -> None:
        await asyncio.to_thread(self.upload_path(upload).unlink, missing_ok=True)

    async def delete_blob(self, address: Address) -> None:
        path = self.blob_path(address)

        def delete() -> None:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                _fsync_dir(path.parent)

        await asyncio.to_thread(delete)

    async def read_blob(self, address: Address, start: int, end: int) -> AsyncIterator[bytes]:
        async for chunk in self._read(self.blob_path(address), start, end):
            yield chunk

    async def _read(self, path: Path, start: int, end: int | None) -> AsyncIterator[bytes]:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            position = start
            while end is None or position < end:
                want = IO_CHUNK if end is None else min(IO_CHUNK, end - position)
                chunk = await asyncio.to_thread(os.pread, fd, want, position)
                if not chunk:
                    if end is not None:
                        raise OSError("blob file is shorter than its recorded size")
                    return
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)  # synchronous: also runs when an abandoned generator is finalised
