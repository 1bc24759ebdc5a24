"""Files on updates through the ``caseline`` command line: post, list, get, names, tampering, Ctrl-C.

Every command runs as a real process against a real broker on loopback; the
devices are enrolled with the library (tests.support.agencies) and the CLI
shares their profiles (tests.support.clirun.cli_home).  Files are KiB to a
few MiB: sizes that matter for speed are bench/'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from caseline.client.cli.progress import PlainLines
from caseline.client.client import Client
from caseline.client.uploads import AttachmentSource
from caseline.schemas.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNTRUSTED, EXIT_USAGE
from caseline.server.keys import METRICS, STORE

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_env, cli_home, finish, start_cli
from tests.support.hostile import start_hostile


async def two_officers(net: Network) -> tuple[Client, Client, bytes]:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op Tembo", members=[("tz-tra", "juma")], witnessed=False)
    await juma.sync(case_id)
    return alice, juma, case_id


def files(where: Path, **sizes: int) -> dict[str, Path]:
    where.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, size in sizes.items():
        path = where / name.replace("_", ".")
        path.write_bytes(os.urandom(size))
        made[path.name] = path
    return made


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blobs_served(net: Network) -> int:
    """Blob downloads the broker answered so far, from its own request counter."""
    return sum(
        int(sample.value)
        for metric in net.app[METRICS].registry.collect()
        if metric.name == "caseline_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["route"].endswith("/blobs/{address}")
    )


async def stored(net: Network, case_id: bytes) -> list[str]:
    return [r.kind for r in await net.app[STORE].entries(case_id, after=0, limit=1000)]


# --------------------------------------------------------------------------- the officer's path


async def test_post_two_files_list_them_and_get_them_back_identical(net: Network, tmp_path: Path) -> None:
    alice, juma, case_id = await two_officers(net)
    sent = files(tmp_path / "sent", photo_jpg=200_000, report_pdf=70_000)
    home_a, pa = cli_home(alice)
    code, out, err = await cli(
        home_a, "--profile", pa, "post", case_id.hex()[:8], "--type", "note", "--field", "text=X-ray",
        "--attach", str(sent["photo.jpg"]), "--attach", str(sent["report.pdf"]),
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert "posted note #1 id " in out and " with 2 files (receipt verified" in out
    assert "uploading" not in out  # progress is stderr's
    assert "caseline: uploading photo.jpg" in err and "photo.jpg: done" in err
    assert "caseline: uploading report.pdf" in err

    home_j, pj = cli_home(juma)
    code, out, err = await cli(home_j, "--profile", pj, "attachments", case_id.hex()[:8])
    assert code == EXIT_OK, err
    assert "photo.jpg" in out and "report.pdf" in out and "ke-kra:alice" in out
    assert "image/jpeg" in out and "application/pdf" in out and "195.3 KiB" in out
    assert sha(sent["photo.jpg"])[:16] in out

    code, out, err = await cli(home_j, "--json", "--profile", pj, "attachments", case_id.hex())
    assert code == EXIT_OK, err
    listed = json.loads(out)
    assert [(a["index"], a["name"], a["size"]) for a in listed] == [
        (1, "photo.jpg", 200_000),
        (2, "report.pdf", 70_000),
    ]
    assert [a["sha256"] for a in listed] == [sha(sent["photo.jpg"]), sha(sent["report.pdf"])]
    assert listed[0]["sender"]["agency"] == "ke-kra" and listed[0]["seq"] == 1
    event = next(e for e in await juma.sync(case_id) or await juma.history(case_id) if e.attachments)
    for ref in event.attachments:
        assert ref.key.hex() not in out, "a file's key reached the listing"
    assert not any("key" in a for a in listed)

    update = listed[0]["update_id"][:8]
    got = tmp_path / "got"
    got.mkdir()
    code, out, err = await cli(home_j, "--profile", pj, "get", case_id.hex()[:8], update, "--out", str(got))
    assert code == EXIT_OK, err
    assert sorted(p.name for p in got.iterdir()) == ["photo.jpg", "report.pdf"]
    for name in ("photo.jpg", "report.pdf"):
        assert (got / name).read_bytes() == sent[name].read_bytes()
        assert f"saved {got / name}" in out and sha(sent[name]) in out  # the full SHA-256, to compare
    assert "downloading photo.jpg" in err

    # An existing file is kept, and nothing is downloaded, without --force.
    (got / "report.pdf").write_bytes(b"my own notes")
    downloads = blobs_served(net)
    assert downloads >= 2
    code, out, err = await cli(home_j, "--profile", pj, "get", case_id.hex()[:8], update, "--out", str(got))
    assert code == EXIT_USAGE, err
    assert blobs_served(net) == downloads, "a refused get downloaded"
    assert "already exist" in err and "--force" in err and len(err.strip().splitlines()) == 2
    assert (got / "report.pdf").read_bytes() == b"my own notes"
    code, out, err = await cli(
        home_j, "--profile", pj, "get", case_id.hex()[:8], update, "2", "--out", str(got), "--force"
    )
    assert code == EXIT_OK, err
    assert (got / "report.pdf").read_bytes() == sent["report.pdf"].read_bytes()
    assert sorted(p.name for p in got.iterdir()) == ["photo.jpg", "report.pdf"]  # no temporary left

    # One file by name, as a script sees it.
    one = tmp_path / "one"
    one.mkdir()
    code, out, err = await cli(
        home_j,
        "--json",
        "--profile",
        pj,
        "get",
        case_id.hex()[:8],
        "#1",
        "--name",
        "photo.jpg",
        "--out",
        str(one),
    )
    assert code == EXIT_OK, err
    assert err == ""  # no progress lines in a script's stderr
    saved = json.loads(out)
    assert [(s["name"], s["path"], s["sha256"]) for s in saved] == [
        ("photo.jpg", str(one / "photo.jpg"), sha(sent["photo.jpg"]))
    ]
    code, _, err = await cli(home_j, "--profile", pj, "get", case_id.hex()[:8], "#1", "3", "--out", str(one))
    assert code == EXIT_USAGE and "attachments 1 to 2, not 3" in err

    # The case's view names the files too, and its JSON carries no key.
    code, out, err = await cli(home_j, "--profile", pj, "case", "show", case_id.hex()[:8])
    assert code == EXIT_OK and "file 1: photo.jpg (image/jpeg, 195.3 KiB)" in out, out
    code, out, _ = await cli(home_j, "--json", "--profile", pj, "case", "show", case_id.hex()[:8])
    shown = next(e for e in json.loads(out)["events"] if e["attachments"])
    assert [a["name"] for a in shown["attachments"]] == ["photo.jpg", "report.pdf"]
    assert all(ref.key.hex() not in out for ref in event.attachments)


async def test_a_file_that_cannot_be_attached_is_refused_before_anything_is_sent(
    net: Network, tmp_path: Path
) -> None:
    alice, _, case_id = await two_officers(net)
    home, profile = cli_home(alice)
    good = files(tmp_path, fine_txt=10)["fine.txt"]
    unreadable = files(tmp_path, secret_txt=10)["secret.txt"]
    unreadable.chmod(0)
    before = await stored(net, case_id)
    post = ("--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=x")
    for bad, says in (
        (tmp_path / "missing.jpg", "no such file"),
        (tmp_path, "is a folder"),
        (unreadable, "permission denied"),
    ):
        if bad == unreadable and os.geteuid() == 0:
            continue  # root reads anything
        code, _, err = await cli(home, *post, "--attach", str(good), "--attach", str(bad))
        assert code == EXIT_USAGE, err
        assert says in err and str(bad) in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 2  # the reason, and the hint
    assert await stored(net, case_id) == before


# --------------------------------------------------------------------------- names from a partner

HOSTILE_NAMES = {
    "../../etc/passwd": "passwd",
    "/etc/passwd": "passwd-2",
    "C:\\Windows\\x.exe": "x.exe",
    "CON.txt": "_CON.txt",
    "photo\u202egnp.exe": "photo_gnp.exe",
    ".bashrc": "bashrc",
}


async def test_a_partners_dangerous_names_are_saved_inside_out_and_the_renaming_is_shown(
    net: Network, tmp_path: Path
) -> None:
    """A member signs names meant to escape the folder or fool the eye; each lands inside --out."""
    alice, juma, case_id = await two_officers(net)
    data = files(tmp_path / "src", blob=3000)["blob"]
    sources = [
        AttachmentSource(name=name, media_type="application/octet-stream", size=3000, open=data)
        for name in HOSTILE_NAMES
    ]
    posted = await alice.post_typed(case_id, "note", {"text": "look"}, attachments=sources)
    home, profile = cli_home(juma)
    out_dir = tmp_path / "work" / "out"
    out_dir.mkdir(parents=True)
    code, out, err = await cli(
        home, "--profile", profile, "get", case_id.hex(), posted.update_id.hex()[:8], "--out", str(out_dir)
    )
    assert code == EXIT_OK, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(HOSTILE_NAMES.values())
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # nothing beside it
    assert not (tmp_path / "etc").exists()
    assert all((out_dir / n).read_bytes() == data.read_bytes() for n in HOSTILE_NAMES.values())
    assert "saved as passwd: the sender's name was '../../etc/passwd' (it named folders" in out
    assert "saved as _CON.txt" in out and "Windows device name" in out
    assert "\u202e" not in out + err, "a bidi override reached the terminal"

    code, out, err = await cli(home, "--profile", profile, "attachments", case_id.hex())
    assert code == EXIT_OK and "\u202e" not in out and "photo\ufffdgnp.exe" in out
    assert "saved as: _CON.txt" in out
    code, out, _ = await cli(home, "--json", "--profile", profile, "attachments", case_id.hex())
    listed = json.loads(out)
    assert [(a["name"], a["saved_as"]) for a in listed] == list(HOSTILE_NAMES.items())


# --------------------------------------------------------------------------- a broker that tampers


async def test_a_blob_the_broker_corrupted_is_exit_3_naming_update_and_sender_and_nothing_is_left(
    net: Network, aiohttp_server: Any, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    sent = files(tmp_path / "sent", scan_pdf=150_000)
    posted = await alice.post_typed(case_id, "note", {"text": "scan"}, attachments=[sent["scan.pdf"]])

    def corrupt(_case: bytes, _address: bytes, blob: bytes) -> bytes:
        return blob[:1000] + bytes([blob[1000] ^ 1]) + blob[1001:]

    async with aiohttp.ClientSession() as session:
        hostile, url = await start_hostile(aiohttp_server, net, session)
        hostile.rewrite_blob = corrupt
        await juma.login(server_url=url)
        home, profile = cli_home(juma)
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        short = posted.update_id.hex()[:8]
        code, out, err = await cli(
            home, "--profile", profile, "get", case_id.hex(), short, "--out", str(out_dir)
        )
    assert hostile.blob_ranges, "the download did not pass the hostile broker"
    assert code == EXIT_UNTRUSTED, err
    reason, hint = err.strip().splitlines()[-2:]  # after the progress line that the download began
    assert reason.startswith(f"caseline: attachment 1 ('scan.pdf') of update {short} by ke-kra:alice failed")
    assert hint.startswith("hint: ")
    assert "Traceback" not in err and out == "", err
    assert list(out_dir.iterdir()) == [], "a tampered download left a file behind"


# --------------------------------------------------------------------------- Ctrl-C mid-upload


class Front:
    """Forwards every request (headers and all) to the real broker, holding the first upload PATCH."""

    def __init__(self, net: Network, session: aiohttp.ClientSession) -> None:
        self.net, self.session = net, session
        self.hold: Callable[[web.Request], bool] = lambda r: r.method == "PATCH"
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.hold(request):
            self.hold = lambda _: False
            self.held.set()
            await self.release.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self.session.request(
            request.method,
            self.net.url + request.path_qs,
            data=io.BytesIO(body) if body else None,
            headers=headers,
        ) as r:
            data = await r.read()
            passed = {
                k: v
                for k, v in r.headers.items()
                if k.lower()
                not in ("content-length", "transfer-encoding", "content-encoding", "date", "server")
            }
            return web.Response(body=data, status=r.status, headers=passed)


async def until_held(proxy: Front, proc: asyncio.subprocess.Process) -> None:
    """Wait for the proxy to hold the upload, or fail with what the CLI said if it ended first."""
    held = asyncio.create_task(proxy.held.wait())
    ended = asyncio.create_task(proc.wait())
    await asyncio.wait({held, ended}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not held.done():
        held.cancel()
        code, out, err = await finish(proc)
        raise AssertionError(f"the CLI ended ({code}) before its upload was held:\n{out}\n{err}")
    ended.cancel()


@pytest.fixture
async def front(aiohttp_server: Any, net: Network) -> AsyncIterator[tuple[Front, str]]:
    async with aiohttp.ClientSession() as session:
        proxy = Front(net, session)
        app = web.Application(client_max_size=64 * 1024 * 1024)  # it holds a whole PATCH in memory
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        server = await aiohttp_server(app)
        yield proxy, str(server.make_url("")).rstrip("/")
        proxy.release.set()


async def test_ctrl_c_during_an_upload_is_130_and_the_next_post_finishes_it(
    net: Network, front: tuple[Front, str], tmp_path: Path
) -> None:
    proxy, url = front
    alice, juma, case_id = await two_officers(net)
    await alice.login(server_url=url)
    video = files(tmp_path, cctv_mp4=3 * 1024 * 1024)["cctv.mp4"]
    home, profile = cli_home(alice)
    proc = await start_cli(
        home, "--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=CCTV",
        "--attach", str(video),
    )  # fmt: skip
    await until_held(proxy, proc)
    proc.send_signal(signal.SIGINT)
    code, out, err = await finish(proc, timeout=60)
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "posted" not in out
    proxy.release.set()
    assert await stored(net, case_id) == ["commit"]  # nothing posted with a half-sent file
    code, out, err = await cli(home, "--profile", profile, "case", "show", case_id.hex())
    assert code == EXIT_OK and "1 post with files not finished yet (this case)" in out, err
    code, out, err = await cli(home, "--json", "--profile", profile, "whoami")
    assert json.loads(out)["unfinished_posts"] == [case_id.hex()], err

    code, out, err = await cli(
        home, "--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=later"
    )
    assert code == EXIT_OK, err
    assert await stored(net, case_id) == ["commit", "update", "update"]  # the cut one first, once
    code, out, _ = await cli(home, "--json", "--profile", profile, "whoami")
    assert json.loads(out)["unfinished_posts"] == []
    got = tmp_path / "got"
    got.mkdir()
    events = [e for e in await juma.sync(case_id) if e.kind == "update"]
    assert [e.content and e.content["text"] for e in events] == ["CCTV", "later"]
    saved = await juma.save_attachment(case_id, events[0].update_id or b"", 0, got)
    assert saved.read_bytes() == video.read_bytes()


# --------------------------------------------------------------------------- progress


async def test_progress_is_a_bar_on_a_terminal_and_never_on_stdout(net: Network, tmp_path: Path) -> None:
    alice, juma, case_id = await two_officers(net)
    sent = files(tmp_path / "sent", big_bin=1024 * 1024)
    posted = await alice.post_typed(case_id, "note", {"text": "big"}, attachments=[sent["big.bin"]])
    home, profile = cli_home(juma)
    for as_json in (False, True):
        out_dir = tmp_path / f"out-{as_json}"
        out_dir.mkdir()
        main_fd, child = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "caseline.client.cli", *(["--json"] if as_json else []),
            "--profile", profile, "get", case_id.hex(), posted.update_id.hex()[:8], "--out", str(out_dir),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=child, env=cli_env(home),
        )  # fmt: skip
        os.close(child)
        terminal = asyncio.create_task(asyncio.to_thread(read_all, main_fd))
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        shown = await terminal
        os.close(main_fd)
        assert proc.returncode == EXIT_OK, shown
        assert "━" in shown and "1.0/1.0 MiB" in shown, shown  # rich's bar, with bytes done of total
        assert "━" not in out.decode() and "1.0/1.0" not in out.decode() and "downloading" not in out.decode()
        if as_json:
            assert json.loads(out)[0]["name"] == "big.bin"


def read_all(fd: int) -> str:
    """Everything written to a pseudo-terminal until its last writer closes it."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_plain_progress_says_start_and_done_and_at_most_a_line_per_tenth_and_few_seconds() -> None:
    now = [0.0]
    lines: list[str] = []
    sink = PlainLines("uploading", lines.append, lambda: now[0])
    sink.start("cctv\x1b[2J.mp4", 1000)
    for _ in range(100):  # 10 bytes a second: 100 seconds in all
        now[0] += 1.0
        sink.advance(10)
    sink.done()
    assert lines[0] == "uploading cctv\ufffd[2J.mp4 (1000 B)"
    assert lines[-1].startswith("cctv\ufffd[2J.mp4: done, 1000 B in 100.0 s")
    middle = lines[1:-1]
    assert [line.split(": ")[1].split(" ")[0] for line in middle] == [str(p) for p in range(10, 100, 10)]

    lines.clear()
    fast = PlainLines("downloading", lines.append, lambda: now[0])
    fast.start("photo.jpg", 1000)
    for _ in range(100):  # all within one instant: no line between start and done
        fast.advance(10)
    fast.done()
    assert len(lines) == 2


async def test_a_file_changed_after_a_cut_upload_stops_the_post_until_it_is_dropped(
    net: Network, front: tuple[Front, str], tmp_path: Path
) -> None:
    proxy, url = front
    alice, _, case_id = await two_officers(net)
    await alice.login(server_url=url)
    scan = files(tmp_path, scan_pdf=512 * 1024)["scan.pdf"]
    home, profile = cli_home(alice)
    post = ("--profile", profile, "post", case_id.hex(), "--type", "note")
    proc = await start_cli(home, *post, "--field", "text=scan", "--attach", str(scan))
    await until_held(proxy, proc)
    proc.send_signal(signal.SIGINT)
    assert (await finish(proc, timeout=60))[0] == EXIT_INTERRUPTED
    proxy.release.set()
    with scan.open("ab") as f:
        f.write(b"edited afterwards")

    code, _, err = await cli(home, *post, "--field", "text=next")
    assert code == EXIT_USAGE, err
    assert "scan.pdf" in err and "changed" in err and "Client." not in err
    code, out, err = await cli(home, "--json", "--profile", profile, "outbox", "list")
    assert code == EXIT_OK, err
    (unfinished,) = json.loads(out)
    assert unfinished["kind"] == "files" and unfinished["case_id"] == case_id.hex()
    assert f"caseline outbox drop {unfinished['id']}" in (await cli(home, *post, "--field", "text=next"))[2]
    assert await stored(net, case_id) == ["commit"]

    code, out, err = await cli(home, "--profile", profile, "outbox", "drop", unfinished["id"])
    assert code == EXIT_OK and "dropped" in out, err
    code, out, err = await cli(home, *post, "--field", "text=next")
    assert code == EXIT_OK, err
    assert await stored(net, case_id) == ["commit", "update"]
    code, out, _ = await cli(home, "--profile", profile, "outbox", "list")
    assert "nothing unfinished" in out


def test_progress_in_a_pipe_loads_no_rich() -> None:
    """A script's post with files stays as light as one without: rich is for terminals (issue 11)."""
    code = (
        "import sys\n"
        "from caseline.client.cli import main\n"
        "from caseline.client.cli.progress import progress\n"
        "for as_json in (True, False):\n"
        "    with progress('uploading', as_json=as_json) as sink:\n"
        "        sink.start('a.jpg', 10); sink.advance(10); sink.done()\n"
        "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if m.startswith('rich'))\n"
    )
    done = subprocess.run(  # nosec B603 - this interpreter on a fixed snippet
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert done.stdout == "" and len(lines) == 2, done.stdout + done.stderr  # the quiet one said nothing
    assert lines[0] == "caseline: uploading a.jpg (10 B)"
    assert lines[1].startswith("caseline: a.jpg: done, 10 B in ")
