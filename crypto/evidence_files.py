"""Attachments in an evidence export: which file is which, and whether it is the signed one.

A bundle is one signed object of bounded size; the files its updates carry
can be gigabytes, so an export with attachments is a directory: the unchanged
bundle, the plaintext files as a court wants to open them, and a manifest a
person can read.  No new signature binds the files: each disclosed update's
signed record already carries every attachment's exact size and SHA-256, so a
file is bound once the bundle verifies and the file's size and digest are the
ones its record declares.

A file is named ``<seq>-<index>-<name>``: the log position of its update and
its place among the update's attachments say which reference it claims to be;
the rest is the sender's name made safe for a file system, for people only
(the verifier reports the signed name, never trusts this part).

Sans-I/O: the shell lists the directory and hashes each file (streamed) and
feeds names, sizes and digests to ``AttachmentFiles``; every decision is here.
PROTOCOL.md §8 "Attachments in an export" is the specification.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Final

from caseline.crypto import primitives as P
from caseline.schemas.errors import IntegrityError, UsageError
from caseline.schemas.wire import AttachmentRef, DeviceCert

BUNDLE_FILE: Final = "bundle.caseline"
MANIFEST_FILE: Final = "MANIFEST.txt"
ATTACHMENTS_DIR: Final = "attachments"

_FILE_NAME: Final = re.compile(r"(0|[1-9][0-9]{0,9})-(0|[1-9][0-9]?)-(.+)", re.DOTALL)


@dataclasses.dataclass(frozen=True, slots=True)
class ExhibitStatus:
    """One attachment of a disclosed update, and the file that carried it (None: not included)."""

    seq: int
    index: int
    update_id: bytes
    ref: AttachmentRef
    sender: DeviceCert
    file: str | None = None

    @property
    def included(self) -> bool:
        return self.file is not None


def disclosed_attachments(
    records: Iterable[tuple[int, bytes, tuple[AttachmentRef, ...] | None, DeviceCert]],
) -> tuple[ExhibitStatus, ...]:
    """Every attachment of the disclosed updates ``(seq, update id, refs, sender)``, none included yet."""
    return tuple(
        ExhibitStatus(seq=seq, index=index, update_id=update_id, ref=ref, sender=sender)
        for seq, update_id, refs, sender in records
        for index, ref in enumerate(refs or ())
    )


def file_name(seq: int, index: int, safe_name: str) -> str:
    """The name an exporter gives the file of attachment ``index`` of the update at ``seq``.

    ``safe_name`` is the sender's name already made safe (one path component,
    no control characters); the verifier does not rely on it.
    """
    name = f"{seq}-{index}-{safe_name}"
    if not _FILE_NAME.fullmatch(name) or "/" in safe_name or "\\" in safe_name or "\x00" in safe_name:
        raise ValueError("an exported attachment's name is one path component after its seq and index")
    return name


def parse_file_name(name: str) -> tuple[int, int] | None:
    """The (seq, index) a file under ``attachments/`` claims to be, or None if it claims none."""
    found = _FILE_NAME.fullmatch(name)
    return None if found is None else (int(found[1]), int(found[2]))


class AttachmentFiles:
    """Matches the files of an export to the disclosed references, one file at a time.

    ``claim`` says which reference a file name claims (and so how many bytes
    the shell should hash at most: the expected size plus one shows a longer
    file); ``found`` checks what the shell measured; ``result`` gives every
    disclosed attachment, each with its verified file or as not included.
    Every failure is an ``IntegrityError`` that names the file: the export was
    altered or is not the one the bundle describes.
    """

    def __init__(self, disclosed: Iterable[ExhibitStatus]) -> None:
        self._expected = {(s.seq, s.index): s for s in disclosed}
        self._claimed: dict[tuple[int, int], str] = {}
        self._verified: dict[tuple[int, int], str] = {}

    def claim(self, name: str) -> AttachmentRef:
        where = f"{ATTACHMENTS_DIR}/{name}"
        key = parse_file_name(name)
        if key is None:
            raise IntegrityError(
                f"{where} is not an exported attachment (its name does not start with SEQ-INDEX-)"
            )
        status = self._expected.get(key)
        if status is None:
            raise IntegrityError(
                f"{where} claims to be attachment {key[1]} of entry {key[0]}, "
                "which no update the bundle discloses has"
            )
        earlier = self._claimed.get(key)
        if earlier is not None:
            first, second = sorted((earlier, name))
            raise IntegrityError(
                f"{ATTACHMENTS_DIR}/{first} and {ATTACHMENTS_DIR}/{second} both claim to be "
                f"attachment {key[1]} of entry {key[0]}"
            )
        self._claimed[key] = name
        return status.ref

    def found(self, name: str, size: int, sha256: bytes) -> None:
        """Check a claimed file's measured size and SHA-256 (``sha256`` may be empty if the size differs)."""
        key = parse_file_name(name)
        if key is None or self._claimed.get(key) != name:
            raise ValueError("found() takes a file claim() accepted")
        status = self._expected[key]
        ref, where = status.ref, f"{ATTACHMENTS_DIR}/{name}"
        update = f"update #{status.seq} ({status.update_id.hex()[:8]})"
        if size != ref.size:
            raise IntegrityError(
                f"{where} is {'longer' if size > ref.size else 'shorter'} than the {ref.size} bytes "
                f"{update} signed for its attachment {status.index}: the file was altered"
            )
        if not P.constant_time_equal(sha256, ref.sha256):
            raise IntegrityError(
                f"{where} is not the file {update} signed for its attachment {status.index} "
                "(its SHA-256 differs): the file was altered or replaced"
            )
        self._verified[key] = name

    def result(self) -> tuple[ExhibitStatus, ...]:
        unchecked = sorted(set(self._claimed) - set(self._verified))
        if unchecked:
            raise ValueError(f"claimed files were never checked: {unchecked}")
        return tuple(
            dataclasses.replace(status, file=self._verified.get(key))
            for key, status in sorted(self._expected.items())
        )


def choose(
    disclosed: Iterable[ExhibitStatus], wanted: Iterable[tuple[int, int]] | None
) -> tuple[ExhibitStatus, ...]:
    """The attachments an export includes: all of the disclosed updates' (``wanted`` None), or those named.

    Naming an attachment of an update the bundle does not disclose is the
    caller's mistake: its file would be bound by no signed record in the bundle.
    """
    statuses = {(s.seq, s.index): s for s in disclosed}
    if wanted is None:
        return tuple(statuses[k] for k in sorted(statuses))
    seqs = {seq for seq, _ in statuses}
    chosen = []
    for seq, index in sorted(set(wanted)):
        status = statuses.get((seq, index))
        if status is None:
            if seq not in seqs:
                raise UsageError(
                    f"attachment {seq}:{index} belongs to entry {seq}, which the bundle does not "
                    "disclose as an update with attachments: disclose it with --seq, or leave it out"
                )
            count = sum(1 for s, _ in statuses if s == seq)
            raise UsageError(
                f"update #{seq} has {count} attachment{'s' if count != 1 else ''} "
                f"(index 0 to {count - 1}), not {index}"
            )
        chosen.append(status)
    return tuple(chosen)
