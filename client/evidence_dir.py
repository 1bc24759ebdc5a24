"""Evidence exports with attachments: the directory on disk, written and verified.

The shell around crypto/evidence_files.py.  Writing: the export is built in
``OUT.tmp-XXXX`` (0700, files 0600) and renamed into place only once every
file is written, fetched through the verified download path and fsync'd, so a
failure or Ctrl-C leaves no half-written export under the name asked for.
Verifying: the directory is listed without following links, each file is
hashed in bounded reads (memory stays flat whatever its size, and no more
than its signed size plus one byte is read), and the sans-I/O checker decides.

MANIFEST.txt is for people: it is made from the verified bundle and the files
present, so the verifier remakes it and refuses an export whose manifest says
something else (a list a person reads cannot be quietly altered either).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, Final

from caseline.client.filenames import MAX_EXTENSION_CHARS, MAX_NAME_BYTES, safe_name
from caseline.crypto.evidence import EvidenceReport, verify_evidence
from caseline.crypto.evidence_files import (
    ATTACHMENTS_DIR,
    BUNDLE_FILE,
    MANIFEST_FILE,
    AttachmentFiles,
    ExhibitStatus,
    file_name,
)
from caseline.schemas.errors import IntegrityError, UsageError

READ_SIZE: Final = 1024 * 1024

#: Fetches one attachment's verified plaintext into an open file; raises IntegrityError on failure.
Fetch = Callable[[ExhibitStatus, BinaryIO], Awaitable[None]]


def exported_name(status: ExhibitStatus) -> str:
    """``SEQ-INDEX-NAME``: the sender's name made safe (client/filenames.py), cut to fit 255 bytes."""
    prefix = f"{status.seq}-{status.index}-"
    safe = safe_name(status.ref.name, index=status.index + 1).name
    budget = MAX_NAME_BYTES - len(prefix)
    if len(safe.encode()) > budget:
        stem, dot, ext = safe.rpartition(".")
        tail = f".{ext}" if dot and stem and len(ext) <= MAX_EXTENSION_CHARS else ""
        room = budget - len(tail.encode())
        safe = safe[: len(safe) - len(tail)].encode()[:room].decode(errors="ignore").rstrip(". ") + tail
    return file_name(status.seq, status.index, safe)


def _shown(text: str) -> str:
    """A name in quotes with its invisible characters escaped: what it is, unambiguously (PROTOCOL.md §8)."""

    def one(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
        return ch

    return '"' + "".join(one(ch) for ch in text) + '"'


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def manifest_text(report: EvidenceReport, bundle_sha256: bytes) -> str:
    """What MANIFEST.txt holds for a verified bundle and the attachments included with it."""
    lines = [
        f"caseline evidence export of case {report.case_id.hex()}",
        f"exported by {report.exporter.agency_id}:{report.exporter.user_id} at {_utc(report.exported_at)}",
        f"{BUNDLE_FILE} sha256 {bundle_sha256.hex()}",
        "",
        "This list is for people. Each file is bound by the signed update it came with:",
        f"`caseline evidence verify` checks its size and SHA-256 against {BUNDLE_FILE}",
        "(PROTOCOL.md section 8) and refuses an export whose files or list were altered.",
    ]
    for status in report.attachments:
        ref, sender = status.ref, status.sender
        lines += [
            "",
            f"{ATTACHMENTS_DIR}/{status.file}" if status.file is not None else "(not included)",
            f"  update:     #{status.seq} {status.update_id.hex()}, attachment {status.index}",
            f"  sender:     {sender.agency_id}:{sender.user_id} (device {sender.device_id.hex()})",
            f"  name:       {_shown(ref.name)}",
            f"  media type: {ref.media_type}",
            f"  size:       {ref.size} bytes",
            f"  sha256:     {ref.sha256.hex()}",
        ]
    return "\n".join(lines) + "\n"


def read_bundle(directory: Path) -> bytes:
    """The bundle of an export directory; a folder without one is not an export (the caller's mistake)."""
    path = directory / BUNDLE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UsageError(
            f"{directory} is a folder without {BUNDLE_FILE}: give an evidence bundle or an export folder"
        ) from None
    except OSError:
        raise IntegrityError(f"{BUNDLE_FILE} in {directory} is not a regular file") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IntegrityError(f"{BUNDLE_FILE} in {directory} is not a regular file")
        return f.read()


def _read_bounded(path: Path, limit: int, sink: Callable[[bytes], object]) -> int:
    """Feed a regular file (links refused) to ``sink`` in bounded reads, at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise IntegrityError(f"{path.name} is a symbolic link or cannot be read") from None
    count = 0
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IntegrityError(f"{path.name} is not a regular file")
        while count < limit:
            piece = f.read(min(READ_SIZE, limit - count))
            if not piece:
                break
            sink(piece)
            count += len(piece)
    return count


def _entries(directory: Path) -> dict[str, os.DirEntry[str]]:
    with os.scandir(directory) as found:
        return {e.name: e for e in found}


def check_export(directory: Path, report: EvidenceReport, bundle: bytes) -> EvidenceReport:
    """The report of a verified bundle, with the export's attachments checked against it.

    Fails (``IntegrityError``, naming the file) on anything in the directory
    that the export does not hold, a file that claims no disclosed
    attachment or one another file claims, a wrong size or SHA-256, or a
    manifest that is not the one these files make.
    """
    found = _entries(directory)
    for name, entry in sorted(found.items()):
        if name not in (BUNDLE_FILE, MANIFEST_FILE, ATTACHMENTS_DIR):
            raise IntegrityError(f"{name} does not belong in an evidence export")
        if entry.is_symlink():
            raise IntegrityError(f"{name} is a symbolic link, which an evidence export never holds")
    if MANIFEST_FILE not in found:
        raise IntegrityError(f"{MANIFEST_FILE} is missing from the export")
    checker = AttachmentFiles(report.attachments)
    folder = found.get(ATTACHMENTS_DIR)
    if folder is not None:
        if not folder.is_dir(follow_symlinks=False):
            raise IntegrityError(f"{ATTACHMENTS_DIR} is not a folder")
        for name, entry in sorted(_entries(directory / ATTACHMENTS_DIR).items()):
            if not entry.is_file(follow_symlinks=False):
                raise IntegrityError(f"{ATTACHMENTS_DIR}/{name} is not a regular file")
            try:
                name.encode()
            except UnicodeEncodeError:  # the OS handed back undecodable bytes as surrogates
                raise IntegrityError(f"{ATTACHMENTS_DIR}/{name} has a name that is not UTF-8") from None
            ref = checker.claim(name)
            digest = hashlib.sha256()
            size = _read_bounded(directory / ATTACHMENTS_DIR / name, ref.size + 1, digest.update)
            checker.found(name, size, digest.digest())
    checked = _with_attachments(report, checker.result())
    expected = manifest_text(checked, hashlib.sha256(bundle).digest()).encode()
    manifest = bytearray()
    _read_bounded(directory / MANIFEST_FILE, len(expected) + 1, manifest.extend)
    if manifest != expected:
        raise IntegrityError(
            f"{MANIFEST_FILE} is not the list this export's bundle and files make: "
            "it was altered, or files were added or removed after the export"
        )
    return checked


def verify_export(directory: Path, pins: Mapping[str, str]) -> EvidenceReport:
    """Verify an export directory offline: its bundle, then every file beside it."""
    bundle = read_bundle(directory)
    return check_export(directory, verify_evidence(bundle, pinned=pins), bundle)


def _with_attachments(report: EvidenceReport, statuses: Iterable[ExhibitStatus]) -> EvidenceReport:
    return dataclasses.replace(report, attachments=tuple(statuses))


def refuse_existing_export(out: Path, *, force: bool) -> None:
    """Refuse, before any work, an OUT that exists (without ``force``) or a folder it cannot go in."""
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"-o {out}: there is no folder {parent}; create it or give another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"-o {out}: the folder {parent} is not writable; give another -o")
    if (out.exists() or out.is_symlink()) and not force:
        raise UsageError(f"{out} already exists: add --force to replace it, or give another -o")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


async def write_export(
    out: Path,
    *,
    bundle: bytes,
    report: EvidenceReport,
    chosen: Iterable[tuple[int, int]],
    fetch: Fetch,
    force: bool = False,
) -> EvidenceReport:
    """Write the export directory ``out``: the bundle, the chosen attachments, the manifest.

    ``report`` is the bundle's own verification; ``chosen`` are (seq, index)
    pairs of its attachments.  Each file is fetched (verified) into a new
    0600 file of a private temporary directory; the directory is renamed to
    ``out`` only when all is written.  Returns the report of what was written.
    """
    by_key = {(s.seq, s.index): s for s in report.attachments}
    statuses: list[ExhibitStatus] = []
    picked = set(chosen)
    refuse_existing_export(out, force=force)
    temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))  # 0700
    try:
        _write_new(temp / BUNDLE_FILE, bundle)
        (temp / ATTACHMENTS_DIR).mkdir(mode=0o700)
        for key, status in sorted(by_key.items()):
            if key not in picked:
                statuses.append(status)
                continue
            name = exported_name(status)
            fd = os.open(temp / ATTACHMENTS_DIR / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                await fetch(status, f)
                f.flush()
                os.fsync(f.fileno())
            statuses.append(_included(status, name))
        written = _with_attachments(report, statuses)
        _write_new(temp / MANIFEST_FILE, manifest_text(written, hashlib.sha256(bundle).digest()).encode())
        _fsync_dir(temp / ATTACHMENTS_DIR)
        _fsync_dir(temp)
        _move_into_place(temp, out, force=force)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return written


def _included(status: ExhibitStatus, name: str) -> ExhibitStatus:
    return dataclasses.replace(status, file=name)


def _move_into_place(temp: Path, out: Path, *, force: bool) -> None:
    """Rename the finished export to ``out``; with ``force`` the old one goes only after."""
    old: Path | None = None
    if force and (out.exists() or out.is_symlink()):
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rename(out, old / "replaced")
    try:
        os.rename(temp, out)
    except OSError:
        if old is not None:
            os.rename(old / "replaced", out)
            old.rmdir()
        if out.exists():
            raise UsageError(f"{out} appeared while the export was written: give another -o") from None
        raise
    _fsync_dir(out.parent)
    if old is not None:
        with contextlib.suppress(OSError):
            if (old / "replaced").is_dir() and not (old / "replaced").is_symlink():
                shutil.rmtree(old / "replaced")
            else:
                (old / "replaced").unlink()
            old.rmdir()
