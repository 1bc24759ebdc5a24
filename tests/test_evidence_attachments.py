"""Evidence exports that carry attachments (issue 15, item 4; PROTOCOL.md §8 "Attachments in an export").

One case on a real broker: alice posts a photo and a scan, juma a report
(and, the case being H2, releases it for evidence), alice a note without
files, and juma one more file after his key was stolen (his agency then
revokes him from before it, so that update is voided).  The
real ``caseline`` CLI exports it; the broker is then shut down and every
export is verified by a CLI that holds nothing but the agencies' pins.  Each
tamper test alters a copy of the export and expects exit 3 and a line that
says what is wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess  # nosec B404 - runs the caseline CLI under test
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from caseline.client.client import Client, verify_bundle, wall_clock
from caseline.client.evidence_dir import verify_export, write_export
from caseline.crypto.attachments import seal_bytes
from caseline.crypto.caselog import KIND_UPDATE, CaseView
from caseline.crypto.evidence import export_evidence, verify_evidence
from caseline.crypto.evidence_files import AttachmentFiles, ExhibitStatus, choose, parse_file_name
from caseline.crypto.keys import fingerprint
from caseline.schemas.errors import EXIT_OK, EXIT_UNTRUSTED, EXIT_USAGE, IntegrityError, UsageError
from caseline.schemas.wire import AttachmentRef

from tests.support.agencies import PARTNERS, start_network
from tests.support.clirun import cli, cli_home
from tests.support.world import World, note, open_case

PHOTO = bytes(range(256)) * 600  # 150 KiB: three chunks
SCAN = b"%PDF-1.4 scanned customs declaration\n" * 120
REPORT = b"TRA inspection report: 40 kg, seal TZ-88231\n" * 30
STOLEN = b"posted with a stolen key\n" * 10


@dataclasses.dataclass
class Scene:
    root: Path
    pins: dict[str, str]
    seqs: dict[str, int]
    runs: dict[str, tuple[int, str, str]]

    @property
    def pin_args(self) -> list[str]:
        return [arg for agency, fpr in sorted(self.pins.items()) for arg in ("--pin", f"{agency}={fpr}")]

    def copy(self, name: str, tmp_path: Path) -> Path:
        target = tmp_path / name
        shutil.copytree(self.root / name, target, symlinks=True)
        return target

    def verify(self, path: Path, *extra: str) -> tuple[int, str, str]:
        """``caseline evidence verify`` in a home with no profile: nothing but the pins, no broker."""
        home = path.parent / "empty-home"
        home.mkdir(exist_ok=True, mode=0o700)
        done = subprocess.run(  # nosec B603 - this interpreter, fixed arguments
            [
                sys.executable,
                "-m",
                "caseline.client.cli",
                *extra,
                "evidence",
                "verify",
                str(path),
                *self.pin_args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "CASELINE_HOME": str(home), "NO_COLOR": "1"},
        )
        return done.returncode, done.stdout, done.stderr


async def _post(client: Client, case_id: bytes, text: str, files: list[Path]) -> int:
    view = await client.view(case_id)
    assert view.state is not None
    policy = view.state.policy
    content = {"text": text, "lang": "en", "markings": {"handling": policy.handling, "tlp": policy.tlp}}
    return (await client.post(case_id, "note", content, attachments=files)).seq


async def _build(root: Path) -> Scene:
    servers: list[TestServer] = []

    async def serve(app: web.Application) -> TestServer:
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    (root / "net").mkdir()
    net = await start_network(serve, root / "net")
    try:
        for agency_id, name, country in PARTNERS:
            await net.agency(agency_id, name, country)
        alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
        case_id = await alice.create_case(title="Op. Namanga", members=[("tz-tra", "juma")])
        files = root / "files"
        files.mkdir()
        for name, data in (("photo.jpg", PHOTO), ("scan.pdf", SCAN), ("report.txt", REPORT)):
            (files / name).write_bytes(data)
        (files / "stolen.bin").write_bytes(STOLEN)
        seqs = {
            "photo": await _post(
                alice, case_id, "seizure photo and scan", [files / "photo.jpg", files / "scan.pdf"]
            )
        }
        await juma.sync(case_id)
        seqs["report"] = await _post(juma, case_id, "inspection report", [files / "report.txt"])
        # The case is H2: TRA's report goes into KRA's evidence only once TRA releases it (§6.7).
        report_id = next(e.update_id for e in await juma.history(case_id) if e.seq == seqs["report"])
        assert report_id is not None
        await juma.post_typed(case_id, "release", {"of": report_id.hex(), "purpose": "evidence"})
        await alice.sync(case_id)
        seqs["plain"] = (await alice.post_note(case_id, "no files here")).seq
        # Juma's key is stolen; his agency revokes it from a moment after his last good post.
        await juma.sync(case_id)
        since = wall_clock() + 1
        while wall_clock() <= since:
            await asyncio.sleep(0)
        seqs["voided"] = await _post(juma, case_id, "posted by the thief", [files / "stolen.bin"])
        await net.admins["tz-tra"].revoke(juma.keys.device_id, reason="key-compromise", since=since)
        await net.publish("tz-tra")
        await alice.refresh_revocations(force=True)
        kinds = {e.seq: e.kind for e in await alice.sync(case_id)}
        assert kinds.get(seqs["voided"]) == "voided", kinds

        home, profile = cli_home(alice)
        case = case_id.hex()
        exports = root / "exports"
        exports.mkdir()

        async def export(name: str, *args: str) -> tuple[int, str, str]:
            out = exports / name
            return await cli(home, "--profile", profile, "evidence", "export", case, "-o", str(out), *args)

        runs = {
            "full": await export("full", "--with-attachments"),
            "part": await export("part", "--attachment", f"{seqs['photo']}:1"),
            "undisclosed": await export(
                "undisclosed", "--seq", str(seqs["photo"]), "--attachment", f"{seqs['report']}:0"
            ),
            "no-such-index": await export("no-such-index", "--attachment", f"{seqs['photo']}:2"),
            "voided": await export("voided", "--attachment", f"{seqs['voided']}:0"),
            "voided-seq": await export("voided-seq", "--seq", str(seqs["voided"]), "--with-attachments"),
            "again": await export("full", "--with-attachments"),
            "plain": await export("plain.evidence"),
        }
        pins = {agency: admin.fingerprint for agency, admin in net.admins.items()}
        return Scene(root=exports, pins=pins, seqs=seqs, runs=runs)
    finally:
        await net.close()
        for server in servers:
            await server.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """The case and its exports, made once; the broker is gone before any test verifies."""
    return asyncio.run(_build(tmp_path_factory.mktemp("evidence-attachments")))


def _file(export: Path, seq: int, index: int) -> Path:
    found = [p for p in (export / "attachments").iterdir() if parse_file_name(p.name) == (seq, index)]
    assert len(found) == 1, found
    return found[0]


def _attachments(out: str) -> dict[tuple[int, int], dict[str, Any]]:
    return {(a["seq"], a["index"]): a for a in json.loads(out)["attachments"]}


# --------------------------------------------------------------------------- export and offline verify


def test_an_export_with_attachments_verifies_offline_with_the_pins_only(scene: Scene, tmp_path: Path) -> None:
    code, out, err = scene.runs["full"]
    assert code == EXIT_OK, err
    assert "3 of 3 attachments verified" in out
    export = scene.copy("full", tmp_path)
    assert sorted(p.name for p in export.iterdir()) == ["MANIFEST.txt", "attachments", "bundle.caseline"]
    photo, report = scene.seqs["photo"], scene.seqs["report"]
    assert _file(export, photo, 0).read_bytes() == PHOTO
    assert _file(export, photo, 1).read_bytes() == SCAN
    assert _file(export, report, 0).read_bytes() == REPORT
    assert _file(export, photo, 0).name == f"{photo}-0-photo.jpg"

    code, out, err = scene.verify(export, "--json")
    assert code == EXIT_OK, err
    listed = _attachments(out)
    assert set(listed) == {(photo, 0), (photo, 1), (report, 0)}
    assert all(a["status"] == "verified" for a in listed.values())
    assert listed[(photo, 0)] | {"update_id": None, "device": None} == {
        "seq": photo, "index": 0, "update_id": None, "device": None, "name": "photo.jpg",
        "media_type": "image/jpeg", "size": len(PHOTO), "sha256": hashlib.sha256(PHOTO).hexdigest(),
        "sender": "ke-kra:alice", "file": f"attachments/{photo}-0-photo.jpg", "status": "verified",
    }  # fmt: skip
    assert listed[(report, 0)]["sender"] == "tz-tra:juma"

    code, out, err = scene.verify(export)
    assert code == EXIT_OK, err
    assert f"#{photo}:0" in out and "VERIFIED" in out and hashlib.sha256(SCAN).hexdigest() in out
    # The library says the same from the path.
    report_ = verify_bundle(export, scene.pins)
    assert [(a.seq, a.index, a.file is not None) for a in report_.attachments] == [
        (photo, 0, True), (photo, 1, True), (report, 0, True),
    ]  # fmt: skip
    manifest = (export / "MANIFEST.txt").read_text()
    assert f"attachments/{photo}-1-scan.pdf" in manifest and hashlib.sha256(SCAN).hexdigest() in manifest


def test_the_export_is_private_and_leaves_nothing_half_written(scene: Scene) -> None:
    export = scene.root / "full"
    assert stat.S_IMODE(export.stat().st_mode) == 0o700
    assert stat.S_IMODE((export / "attachments").stat().st_mode) == 0o700
    for path in [export / "bundle.caseline", export / "MANIFEST.txt", *(export / "attachments").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # No temporary folder stays behind the exports that were written or refused.
    assert not [p.name for p in scene.root.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_an_existing_export_is_not_replaced_without_force(scene: Scene) -> None:
    code, _, err = scene.runs["again"]
    assert code == EXIT_USAGE and "already exists: add --force" in err


def test_a_bundle_alone_lists_the_attachments_as_not_included(scene: Scene, tmp_path: Path) -> None:
    code, _, err = scene.runs["plain"]
    assert code == EXIT_OK, err
    assert (scene.root / "plain.evidence").is_file()
    code, out, err = scene.verify(scene.root / "plain.evidence", "--json")
    assert code == EXIT_OK, err
    assert {a["status"] for a in _attachments(out).values()} == {"not included"}


def test_a_subset_export_verifies_and_reports_the_rest_not_included(scene: Scene, tmp_path: Path) -> None:
    code, out, err = scene.runs["part"]
    assert code == EXIT_OK, err
    photo, report = scene.seqs["photo"], scene.seqs["report"]
    export = scene.copy("part", tmp_path)
    assert [p.name for p in (export / "attachments").iterdir()] == [f"{photo}-1-scan.pdf"]
    code, out, err = scene.verify(export, "--json")
    assert code == EXIT_OK, err
    status = {k: a["status"] for k, a in _attachments(out).items()}
    assert status == {(photo, 0): "not included", (photo, 1): "verified", (report, 0): "not included"}
    code, out, _ = scene.verify(export)
    assert code == EXIT_OK and "not included" in out


def test_export_refuses_attachments_of_undisclosed_updates(scene: Scene) -> None:
    code, _, err = scene.runs["undisclosed"]
    assert code == EXIT_USAGE, err
    assert f"attachment {scene.seqs['report']}:0 belongs to entry {scene.seqs['report']}" in err
    code, _, err = scene.runs["no-such-index"]
    assert code == EXIT_USAGE and f"update #{scene.seqs['photo']} has 2 attachments" in err
    assert not (scene.root / "undisclosed").exists() and not (scene.root / "no-such-index").exists()


def test_a_voided_updates_attachments_are_never_exported(scene: Scene) -> None:
    voided = scene.seqs["voided"]
    code, _, err = scene.runs["voided"]
    assert code == EXIT_USAGE and f"attachment {voided}:0 belongs to entry {voided}" in err
    code, _, err = scene.runs["voided-seq"]
    assert code == EXIT_USAGE and f"entry {voided} is not an update this device can disclose" in err
    assert not (scene.root / "voided").exists() and not (scene.root / "voided-seq").exists()
    # The full export neither discloses the voided update nor carries its file.
    assert all(
        parse_file_name(p.name) != (voided, 0) for p in (scene.root / "full" / "attachments").iterdir()
    )
    code, out, err = scene.verify(scene.root / "full", "--json")
    assert code == EXIT_OK, err
    assert voided not in {seq for seq, _ in _attachments(out)}


# --------------------------------------------------------------------------- tampering: exit 3, said in words


def _refused(scene: Scene, export: Path, *words: str) -> str:
    code, out, err = scene.verify(export)
    assert code == EXIT_UNTRUSTED, out + err
    assert "Traceback" not in err and "VERIFIED" not in out
    line, *rest = err.strip().splitlines()  # one line saying what is wrong, then the hint
    assert "is not as exported" in line and all(r.startswith("hint:") for r in rest), err
    for word in words:
        assert word in line, line
    return line


def test_a_changed_byte_in_an_attachment_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["photo"], 0)
    data = bytearray(path.read_bytes())
    data[70_000] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(scene, export, path.name, "SHA-256 differs")


def test_a_file_swapped_for_another_attachments_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    photo, scan = _file(export, scene.seqs["photo"], 0), _file(export, scene.seqs["photo"], 1)
    photo_bytes = photo.read_bytes()
    photo.write_bytes(scan.read_bytes())
    scan.write_bytes(photo_bytes)
    _refused(scene, export, "than the", "bytes")


def test_a_truncated_attachment_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    path.write_bytes(path.read_bytes()[:-1])
    _refused(scene, export, path.name, "shorter than the")


def test_an_extended_attachment_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    path.write_bytes(path.read_bytes() + b"\n")
    _refused(scene, export, path.name, "longer than the")


def test_an_extra_file_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    (export / "attachments" / "notes.txt").write_text("added later")
    _refused(scene, export, "attachments/notes.txt is not an exported attachment")
    (export / "attachments" / "notes.txt").unlink()
    (export / "README.txt").write_text("added later")
    _refused(scene, export, "README.txt does not belong in an evidence export")


def test_a_file_claiming_an_attachment_no_disclosed_update_has_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    path.rename(path.with_name(f"{scene.seqs['plain']}-0-report.txt"))
    _refused(scene, export, f"attachment 0 of entry {scene.seqs['plain']}")


def test_a_file_renamed_to_another_seq_and_index_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("part", tmp_path)  # only the scan: #photo:1
    path = _file(export, scene.seqs["photo"], 1)
    path.rename(path.with_name(f"{scene.seqs['photo']}-0-scan.pdf"))
    _refused(scene, export, f"{scene.seqs['photo']}-0-scan.pdf")


def test_two_files_claiming_one_attachment_fail(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    shutil.copyfile(path, path.with_name(f"{scene.seqs['report']}-0-copy.txt"))
    _refused(scene, export, "both claim to be attachment 0")


def test_an_altered_manifest_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    manifest = export / "MANIFEST.txt"
    manifest.write_text(manifest.read_text().replace("photo.jpg", "holiday.jpg", 1))
    _refused(scene, export, "MANIFEST.txt is not the list")


def test_a_file_removed_after_the_export_fails_on_the_manifest(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    _file(export, scene.seqs["report"], 0).unlink()
    _refused(scene, export, "MANIFEST.txt is not the list")


def test_a_symbolic_link_fails(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(REPORT)
    path.unlink()
    path.symlink_to(outside)
    _refused(scene, export, path.name, "not a regular file")


def test_a_file_name_that_is_not_utf8_fails_in_words(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    path = _file(export, scene.seqs["report"], 0)
    os.rename(bytes(path), bytes(path.parent) + f"/{scene.seqs['report']}-0-".encode() + b"\xff.txt")
    _refused(scene, export, "has a name that is not UTF-8")


def test_a_folder_without_a_bundle_is_the_callers_mistake(scene: Scene, tmp_path: Path) -> None:
    export = scene.copy("full", tmp_path)
    (export / "bundle.caseline").unlink()
    code, _, err = scene.verify(export)
    assert code == EXIT_USAGE and "without bundle.caseline" in err


# --------------------------------------------------------------------------- the sans-I/O checker alone


def _status(seq: int, index: int, data: bytes) -> ExhibitStatus:
    ref = AttachmentRef(
        name=f"f{seq}-{index}", media_type="application/octet-stream", size=len(data),
        sha256=hashlib.sha256(data).digest(), address=bytes(32), key=bytes(32),
    )  # fmt: skip
    cert: Any = object()  # the checker never reads the sender
    return ExhibitStatus(seq=seq, index=index, update_id=bytes(16), ref=ref, sender=cert)


def test_the_checker_matches_files_by_seq_and_index_and_reports_the_rest() -> None:
    disclosed = [_status(3, 0, b"a" * 10), _status(3, 1, b"b" * 5), _status(7, 0, b"c")]
    files = AttachmentFiles(disclosed)
    assert files.claim("3-1-whatever name.bin").size == 5
    files.found("3-1-whatever name.bin", 5, hashlib.sha256(b"b" * 5).digest())
    assert [(s.seq, s.index, s.file) for s in files.result()] == [
        (3, 0, None), (3, 1, "3-1-whatever name.bin"), (7, 0, None),
    ]  # fmt: skip
    for bad in ("03-0-x", "3-00-x", "3-0", "x-0-y", "3-16-x"):
        with pytest.raises(IntegrityError):
            AttachmentFiles(disclosed).claim(bad)
    checker = AttachmentFiles(disclosed)
    checker.claim("7-0-c")
    with pytest.raises(IntegrityError, match="longer"):
        checker.found("7-0-c", 2, b"")
    assert [s.index for s in choose(disclosed, [(3, 1)])] == [1]
    with pytest.raises(UsageError):
        choose(disclosed, [(5, 0)])


def test_hostile_names_are_written_as_one_safe_file_each_and_still_verify(tmp_path: Path) -> None:
    """A sender's name is theirs to choose: in an export it becomes SEQ-INDEX-<safe name>, inside
    attachments/, and the verifier reports the signed name (a protocol-level case, no broker)."""
    w = World("evidence-names")
    w.agency("ke-kra")
    alice = w.device("ke-kra", "alice")
    broker, _, _ = open_case(w, alice, [])
    view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(view)
    files = {"../../etc/passwd": b"root:x:0:0\n", "CON.txt": b"console", "photo\u202egnp.exe": b"MZ"}
    refs = [
        seal_bytes(data, name=name, media_type="application/octet-stream", key=bytes([n]) * 32)[0]
        for n, (name, data) in enumerate(files.items())
    ]
    staged = view.prepare(
        content_type="note", content=note("files"), now=w.now, nonce=w.rng(24), attachments=refs
    )
    view.confirm(staged)
    broker.append(KIND_UPDATE, staged.sealed.envelope)
    broker.feed(view)
    seq = len(broker.entries) - 1
    bundle = export_evidence(
        view,
        exporter=alice.keys,
        envelopes={seq: staged.sealed.envelope},
        receipt=broker.receipts[-1],
        now=w.now,
    )
    pins = {a: fingerprint(a, r.public_key) for a, r in w.roots.items()}
    report = verify_evidence(bundle, pinned=pins)

    async def fetch(status: ExhibitStatus, fileobj: BinaryIO) -> None:
        fileobj.write(files[status.ref.name])

    out = tmp_path / "export"
    asyncio.run(
        write_export(out, bundle=bundle, report=report, chosen=[(seq, 0), (seq, 1), (seq, 2)], fetch=fetch)
    )
    names = sorted(p.name for p in (out / "attachments").iterdir())
    assert names == [f"{seq}-0-passwd", f"{seq}-1-_CON.txt", f"{seq}-2-photo_gnp.exe"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    checked = verify_export(out, pins)
    assert [(a.ref.name, a.file) for a in checked.attachments] == list(zip(files, names, strict=True))
    assert '"photo\\u202egnp.exe"' in (out / "MANIFEST.txt").read_text()
