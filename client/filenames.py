"""The name a received file is saved under: one harmless path component, whatever the sender wrote.

An attachment's name comes from a partner's signed record, and a signature
says only who chose it, not that it is safe.  Written as it is, ``../../.bashrc``
leaves the chosen folder, ``/etc/cron.d/x`` or ``C:\\Windows\\x.exe`` names
another place altogether, ``CON.txt`` opens a console device on Windows,
``photo\\u202egnp.exe`` shows as ``photoexe.png`` and a name with an escape
sequence rewrites the terminal that lists it.  So a name is reduced to a
single component a file system on Linux, macOS and Windows stores as a plain
file inside the folder, and the person is told when and why it changed, with
the sender's name shown (escaped) beside it.

Sans-I/O and pure: the same rules serve the CLI, the library and a web app.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Final

#: What most file systems allow in one component (ext4, APFS, NTFS's 255 UTF-16 units are more).
MAX_NAME_BYTES: Final = 255
#: An extension longer than this is not worth keeping whole when a name must be cut.
MAX_EXTENSION_CHARS: Final = 16

#: Windows opens these devices for the name with any extension, in any case, with trailing spaces;
#: the superscript digits count too (``COM¹``).
DEVICE_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}
)
#: Characters Windows refuses in a name (``:`` also names alternate data streams), and both separators.
WINDOWS_RESERVED: Final = frozenset('<>:"|?*')
SEPARATORS: Final = re.compile(r"[/\\]")
#: Unicode categories that draw nothing or move the text: controls, format (bidi overrides,
#: zero-width), line and paragraph separators, surrogates (undecodable bytes), private use.
HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
REPLACEMENT: Final = "_"


@dataclasses.dataclass(frozen=True)
class SafeName:
    """The name to save under, and why it differs from the sender's (empty when it does not)."""

    name: str
    reasons: tuple[str, ...] = ()

    @property
    def rewritten(self) -> bool:
        return bool(self.reasons)


def is_device_name(name: str) -> bool:
    """Whether Windows would open a device for ``name`` (``CON``, ``nul.tar.gz``, ``COM1 .txt``)."""
    stem = name.split(".", 1)[0].rstrip(" ")
    return stem.upper() in DEVICE_NAMES


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in HIDDEN_CATEGORIES


def _cut(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes at a character boundary, its extension kept when short."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION_CHARS:
        stem, extension = name, ""
    tail = f".{extension}" if extension else ""
    room = limit - len(tail.encode("utf-8"))
    kept = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return kept + tail


def safe_name(name: str, *, index: int = 1) -> SafeName:
    """The single, plain path component to save ``name`` under (``index``: the attachment's 1-based
    position, for ``attachment-N`` when nothing of the name is left).

    Rewrites rather than refuses, so that a partner's file can always be saved;
    every rewrite is named in ``reasons`` for the person to see.
    """
    reasons: list[str] = []
    text = name

    # Folders, absolute paths and drive letters: only the last real component is kept.
    parts = [p for p in SEPARATORS.split(text) if p not in ("", ".", "..")]
    last = parts[-1] if parts else ""
    if re.match(r"^[A-Za-z]:", last):
        last = last[2:]
    if last != text:
        reasons.append("it named folders or a drive")
    text = last

    if any(_hidden(ch) for ch in text):
        reasons.append("it held control or invisible formatting characters")
        text = "".join(REPLACEMENT if _hidden(ch) else ch for ch in text)
    if any(ch in WINDOWS_RESERVED for ch in text):
        reasons.append('it held characters Windows refuses (<>:"|?*)')
        text = "".join(REPLACEMENT if ch in WINDOWS_RESERVED else ch for ch in text)

    stripped = text.lstrip(". ")
    if stripped != text:
        reasons.append("it began with a dot or a space (a hidden file)")
        text = stripped
    stripped = text.rstrip(". ")
    if stripped != text:
        reasons.append("it ended with a dot or a space")
        text = stripped

    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        reasons.append(f"it was longer than {MAX_NAME_BYTES} bytes")
        text = _cut(text, MAX_NAME_BYTES).rstrip(". ")

    if is_device_name(text):
        reasons.append("it is a Windows device name")
        text = _cut(REPLACEMENT + text, MAX_NAME_BYTES).rstrip(". ")

    if not text:
        reasons.append("nothing of it was left")
        text = f"attachment-{index}"
    return SafeName(text, tuple(dict.fromkeys(reasons)))


def unique_names(names: list[str]) -> list[SafeName]:
    """Each name made safe (``safe_name``), then made distinct among themselves.

    Two attachments of one update may come out the same (``a/x.jpg`` and
    ``x.jpg``, or ``X.JPG`` on a file system that ignores case): the later
    ones get ``-2``, ``-3`` before the extension, so that saving all of them
    never writes one over another.
    """
    taken: set[str] = set()
    result: list[SafeName] = []
    for position, name in enumerate(names, start=1):
        safe = safe_name(name, index=position)
        chosen, number = safe.name, 1
        while chosen.casefold() in taken:
            number += 1
            stem, dot, extension = safe.name.rpartition(".")
            if not dot or not stem:
                stem, extension = safe.name, ""
            tail = f"-{number}" + (f".{extension}" if extension else "")
            chosen = _cut(stem, MAX_NAME_BYTES - len(tail.encode("utf-8"))) + tail
        if chosen != safe.name:
            safe = SafeName(chosen, (*safe.reasons, "another attachment of the update has the same name"))
        taken.add(chosen.casefold())
        result.append(safe)
    return result
