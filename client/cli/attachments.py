"""Files on updates: ``attachments`` lists them, ``get`` saves them; ``post --attach`` checks them first.

A file's name and size come from a partner's signed record, so what is shown
is escaped (``output.safe``) and what is saved is renamed to one harmless
component inside the chosen folder (``client.filenames``), saying so when it
changed.  Nothing is saved until it verified (the library writes a temporary
file and renames it only then), an existing file is replaced only with
``--force``, and the CLI never opens a file it saved.

Numbers: an update's attachments are numbered from 1 here, in the text and in
``--json`` alike, so that what ``attachments`` prints is what ``get`` takes.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from caseline.client.cli.output import Out, safe, size_text, when
from caseline.client.cli.settings import command, global_options, run, settings
from caseline.client.refs import resolve_update, short_id
from caseline.schemas.errors import EXIT_OK, IntegrityError, UsageError

if TYPE_CHECKING:
    from caseline.client.client import Client
    from caseline.client.core import CaseEvent
    from caseline.client.filenames import SafeName
    from caseline.client.uploads import AttachmentInfo

#: The most files one update carries (PROTOCOL.md §6.6); checked here before a passphrase is asked.
MAX_ATTACHMENTS: Final = 16
#: How many hex digits of a SHA-256 the list shows (``--json`` and ``get`` give all 64).
SHORT_HASH: Final = 16


def check_files(paths: Sequence[str]) -> list[Path]:
    """The files ``--attach`` named, each a readable regular file, else one line saying which is not.

    Checked before the passphrase is asked and before anything is sent:
    finding out after minutes of upload that the third file was a typo wastes
    the person's time, and a folder or a device file has no size to declare.
    """
    if len(paths) > MAX_ATTACHMENTS:
        raise UsageError(f"an update carries at most {MAX_ATTACHMENTS} files; {len(paths)} were given")
    files = []
    for name in paths:
        path = Path(name)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise UsageError(f"--attach {name}: there is no such file") from None
        except OSError as exc:
            raise UsageError(f"--attach {name}: {exc.strerror or 'cannot be read'}") from None
        if stat.S_ISDIR(mode):
            raise UsageError(f"--attach {name} is a folder: attach its files one by one, or an archive")
        if not stat.S_ISREG(mode):
            raise UsageError(f"--attach {name} is not a regular file (a device, a pipe or a socket)")
        if not os.access(path, os.R_OK):
            raise UsageError(f"--attach {name}: permission denied (this user cannot read it)")
        files.append(path)
    return files


#: The library's advice for a post that cannot be finished, in its own (Python) words.
_LIBRARY_DROP: Final = re.compile(r"Client\.drop_pending\('([0-9a-f]{32,64})'\)")


def in_cli_words(exc: UsageError | IntegrityError) -> UsageError | IntegrityError:
    """``exc`` with the library's ``Client.drop_pending('…')`` advice as the command that does it."""
    text = str(exc)
    if not _LIBRARY_DROP.search(text):
        return exc
    return type(exc)(_LIBRARY_DROP.sub(r"`caseline outbox drop \1`", text))


async def named_update(client: Client, case_id: bytes, ref: str) -> tuple[CaseEvent, bytes]:
    """The verified update ``ref`` names (short id, prefix or ``#seq``), as ``case show`` listed it."""
    await client.sync(case_id)
    history = await client.history(case_id)
    updates = {e.seq: e for e in history if e.kind == "update" and e.update_id}
    target = resolve_update(
        ref,
        [e.update_id for e in updates.values() if e.update_id],
        by_seq={seq: e.update_id for seq, e in updates.items() if e.update_id},
        withdrawn=[e.update_id for e in history if e.kind == "voided" and e.update_id],
        gone={e.seq: e.kind for e in history if e.kind in ("voided", "purged")},
        case=case_id.hex()[:8],
    )
    return next(e for e in updates.values() if e.update_id == target), target


def _sender(event: CaseEvent | None) -> str:
    return event.author.name if event is not None and event.author is not None else "?"


def _info_json(info: AttachmentInfo, event: CaseEvent | None, shown: SafeName) -> dict[str, Any]:
    author = event.author if event is not None else None
    return {
        "update_id": info.update_id.hex(), "seq": info.seq, "index": info.index + 1, "name": info.name,
        "saved_as": shown.name, "media_type": info.media_type, "size": info.size,
        "sha256": info.sha256.hex(), "address": info.address.hex(),
        "time": when(event.time) if event is not None and event.time else None,
        "sender": None if author is None else {
            "agency": author.agency_id, "user": author.user_id, "device": author.device_id.hex(),
        },
    }  # fmt: skip


def _renamed_line(shown: SafeName, original: str) -> str:
    return (
        f"  [bold]saved as {safe(shown.name)}[/]: the sender's name was {safe(repr(original))}"
        f" ({'; '.join(shown.reasons)})"
    )


def _pick(infos: list[AttachmentInfo], index: int | None, name: str | None, update: str) -> list[int]:
    """Positions (0-based) in ``infos`` that INDEX or --name choose; all of them when neither is given."""
    if index is not None and name is not None:
        raise UsageError("give INDEX or --name, not both")
    if not infos:
        raise UsageError(f"update {update} carries no attachments")
    if index is not None:
        if not 1 <= index <= len(infos):
            raise UsageError(f"update {update} has attachments 1 to {len(infos)}, not {index}")
        return [index - 1]
    if name is not None:
        from caseline.client.filenames import unique_names  # noqa: PLC0415 - with the command

        saved = unique_names([i.name for i in infos])
        found = [n for n, (i, s) in enumerate(zip(infos, saved, strict=True)) if name in (i.name, s.name)]
        if not found:
            listed = ", ".join(repr(s.name) for s in saved)
            raise UsageError(f"update {update} has no attachment named {name!r}: it has {listed}")
        return found
    return list(range(len(infos)))


def register(root: click.Group) -> None:
    """Add ``attachments``, ``get`` and ``outbox`` to the ``caseline`` group."""
    _outbox(root)

    @command(root, "attachments")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("update_ref", metavar="[UPDATE]", required=False)
    def attachments(case_ref: str, update_ref: str | None) -> int:
        """List the files on a case's updates, or on one UPDATE.

        Each file's number, name, type, size and SHA-256 are as its sender
        signed them; `caseline get` downloads and verifies them.  A name is
        shown escaped, and "saved as" says what `get` would name the file
        when the sender's name is unsafe to use.

        \b
        Examples:
          caseline attachments 3f2a9c
          caseline attachments 3f2a9c 9c1e07aa
          caseline attachments 3f2a9c --json | jq -r '.[].sha256'
        """
        from caseline.client.filenames import unique_names  # noqa: PLC0415 - with the command

        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> tuple[bytes, list[AttachmentInfo], dict[bytes, CaseEvent]]:
            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                update = None if update_ref is None else (await named_update(client, case_id, update_ref))[1]
                if update is None:
                    await client.sync(case_id)
                infos = list(await client.attachments(case_id, update))
                events = {e.update_id: e for e in await client.history(case_id) if e.update_id}
                return case_id, infos, events

        case_id, infos, events = run(act())
        shown: dict[int, SafeName] = {}
        for update_id in dict.fromkeys(i.update_id for i in infos):
            of_update = [n for n, i in enumerate(infos) if i.update_id == update_id]
            for n, name in zip(of_update, unique_names([infos[n].name for n in of_update]), strict=True):
                shown[n] = name
        if out.as_json:
            out.data([_info_json(i, events.get(i.update_id), shown[n]) for n, i in enumerate(infos)])
            return EXIT_OK
        if not infos:
            where = f"update {update_ref}" if update_ref else f"case {case_id.hex()[:8]}"
            out.say(f"no attachments on {where}")
        for n, info in enumerate(infos):
            event = events.get(info.update_id)
            out.block(
                [
                    f"[bold]{short_id(info.update_id)}[/]", f"#{info.seq}", f"file [bold]{info.index + 1}[/]",
                    safe(info.name), f"[bold]{safe(_sender(event))}[/]",
                ],
                [
                    ("type", safe(info.media_type)), ("size", size_text(info.size)),
                    ("sha256", info.sha256.hex()[:SHORT_HASH]),
                    ("saved as", safe(shown[n].name) if shown[n].rewritten else ""),
                ],
            )  # fmt: skip
        return EXIT_OK

    @command(root, "get")
    @click.argument("case_ref", metavar="CASE")
    @click.argument("update_ref", metavar="UPDATE")
    @click.argument("index", metavar="[INDEX]", type=click.IntRange(min=1), required=False)
    @click.option("--name", metavar="NAME", help="The attachment with this name (instead of INDEX).")
    @click.option(
        "--out", "out_dir", metavar="DIR", default=".", show_default=True, help="The folder to save into."
    )
    @click.option("--force", is_flag=True, help="Replace files of the same name in DIR.")
    def get(
        *, case_ref: str, update_ref: str, index: int | None, name: str | None, out_dir: str, force: bool
    ) -> int:
        """Download an update's attachments, verify them, and save them into a folder.

        All of UPDATE's files, or the one numbered INDEX (as `caseline
        attachments` lists them) or named NAME.  Each file is saved only
        once every byte matched what its sender signed (its SHA-256, size
        and every encrypted chunk); otherwise nothing is saved (exit 3).
        A name that could leave the folder or harm it is rewritten, and
        the new name is shown.  An existing file is kept unless --force.
        The files are never opened.

        \b
        Examples:
          caseline get 3f2a9c 9c1e07aa
          caseline get 3f2a9c 9c1e07aa 2 --out ~/evidence/kilimanjaro
          caseline get 3f2a9c '#12' --name scan.pdf --force
        """
        from caseline.client.filenames import unique_names  # noqa: PLC0415 - with the command

        s = settings()
        out = Out(s.as_json)
        folder = Path(out_dir)
        if not folder.is_dir():
            raise UsageError(
                f"--out {out_dir}: there is no folder {out_dir}; create it or give another --out"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out_dir}: the folder is not writable; give another --out")
        secret = s.unlock()

        async def act() -> tuple[CaseEvent, list[tuple[AttachmentInfo, SafeName, Path]]]:
            from caseline.client.cli.progress import progress  # noqa: PLC0415 - only when files move

            async with await s.client(secret) as client:
                case_id = await client.resolve_case(case_ref)
                event, update_id = await named_update(client, case_id, update_ref)
                infos = list(await client.attachments(case_id, update_id))
                chosen = _pick(infos, index, name, short_id(update_id))
                names = unique_names([i.name for i in infos])
                plan = [(infos[n], names[n]) for n in chosen]
                existing = [
                    str(folder / shown.name)
                    for _, shown in plan
                    if (folder / shown.name).exists() or (folder / shown.name).is_symlink()
                ]
                if existing and not force:  # before a byte is downloaded
                    raise UsageError(
                        f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}:"
                        " add --force to replace, or give another --out"
                    )
                saved = []
                with progress("downloading", as_json=out.as_json) as sink:
                    for info, shown in plan:
                        try:
                            path = await client.save_attachment(
                                case_id, update_id, info.index, folder,
                                filename=shown.name, force=force, progress=sink,
                            )  # fmt: skip
                        except IntegrityError as exc:
                            why = str(exc).rsplit("failed verification: ", 1)[-1]  # the library's reason
                            raise IntegrityError(
                                f"attachment {info.index + 1} ({info.name!r}) of update"
                                f" {short_id(update_id)} by {_sender(event)} failed verification"
                                f" and nothing was saved under its name: {why}"
                            ) from None
                        saved.append((info, shown, path))
                return event, saved

        event, saved = run(act())
        if out.as_json:
            out.data([{**_info_json(i, event, shown), "path": str(path)} for i, shown, path in saved])
            return EXIT_OK
        for info, shown, path in saved:
            out.say(f"saved {safe(str(path))}  ({size_text(info.size)}, verified)", whole=True)
            out.say(f"  sha256 {info.sha256.hex()}", whole=True)
            if shown.rewritten:
                out.say(_renamed_line(shown, info.name))
        return EXIT_OK


def _outbox(root: click.Group) -> None:
    @root.group("outbox")
    @global_options
    def outbox() -> None:
        """Posts this profile started and has not finished: list them, or drop one.

        The next `caseline post` to a case finishes its unfinished posts first
        (an upload goes on from where it stopped).  Drop one only when it
        cannot be finished: a file changed or was removed after it was attached.

        \b
        Examples:
          caseline outbox list
          caseline outbox drop 5b0c2e7f9a1d4c3e8f6a2b1c0d9e8f7a
        """

    @command(outbox, "list")
    def outbox_list() -> int:
        """List the unfinished posts: id, case, when it was started, and whether it carries files.

        \b
        Examples:
          caseline outbox list
        """
        s = settings()
        out = Out(s.as_json)
        secret = s.unlock()

        async def act() -> list[tuple[str, bytes, bytes, int]]:
            async with await s.client(secret) as client:
                drafts = [("files", d, c, t) for d, c, _, t in await client.store.drafts()]
                sealed = [
                    ("sealed", p.update_id, p.case_id, p.created_at) for p in await client.store.outbox()
                ]
                return drafts + sealed

        rows = run(act())
        if out.as_json:
            out.data(
                [{"id": i.hex(), "case_id": c.hex(), "started": when(t), "kind": k} for k, i, c, t in rows]
            )
            return EXIT_OK
        if not rows:
            out.say("nothing unfinished")
        for kind, ident, case_id, started in rows:
            what = "with files, uploading" if kind == "files" else "sealed, not yet acknowledged"
            out.say(f"[bold]{ident.hex()}[/]  case {case_id.hex()[:8]}  {when(started)}  {what}", whole=True)
        return EXIT_OK

    @command(outbox, "drop")
    @click.argument("ident", metavar="ID")
    def drop(ident: str) -> int:
        """Forget the unfinished post ID (its full id, as `outbox list` prints it); nothing is posted.

        \b
        Examples:
          caseline outbox drop 5b0c2e7f9a1d4c3e8f6a2b1c0d9e8f7a
        """
        s = settings()
        out = Out(s.as_json)
        raw = _full_id(ident)
        secret = s.unlock()

        async def act() -> bool:
            async with await s.client(secret) as client:
                return await client.drop_pending(raw)

        if not run(act()):
            raise UsageError(f"no unfinished post {ident} (`caseline outbox list` lists them)")
        if out.as_json:
            out.data({"dropped": ident})
        out.say(f"dropped {ident}: it will not be posted")
        return EXIT_OK


def _full_id(text: str) -> bytes:
    """An unfinished post's id in full: a prefix could name another post, and dropping is final."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) not in (16, 32):
        raise UsageError(f"{text!r} is not a full id: give it as `caseline outbox list` prints it")
    return raw
