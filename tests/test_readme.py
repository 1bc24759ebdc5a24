"""Every shell and Python block in README.md is run, so the README cannot drift from the code.

A new user copies the README's commands one after another; so does this test.

* **Shell blocks** run in one sandbox per ``##`` section, in the README's order,
  in one ``bash -euo pipefail`` that reads them one by one (so a variable or a
  function a visible block defines is there for the next one, as in the
  reader's terminal). The sandbox has its own ``HOME``, ``CASELINE_HOME`` and
  working directory, and ``PATH`` starts with the checkout's ``.venv/bin``, as
  after the README's ``. .venv/bin/activate``. The "Set-up" section runs in the
  checkout itself, since it is about the checkout (``make``, ``.venv``); its
  ``make run`` gets ``HOST``, ``PORT`` and ``DATA`` as command-line variables
  (through ``MAKEFLAGS``), DATA in a temporary directory. Nothing else comes from the
  harness: passphrases come from ``CASELINE_PASSPHRASE`` set in a visible block.
* **Ports**: the README's ports (8443 the broker, 8444 and 8446 witnesses, 8445 a second
  broker) are replaced by free loopback ports in the section's text, so two
  runs, or a broker a developer left running, never collide.
* **Annotations** (tests/support/readme.py): ``dry-run`` blocks hold ``make``
  targets that cannot run in a test (the suite itself, the benches, the
  floods); each is checked with ``make -n`` so a renamed target fails.
  ``background until URL`` starts a server in the background (its own process
  group), waits for its own word that it is ready (no sleeps), checks that the
  URL answers 200, and stops it by its process group at the section's end.
  ``skip`` needs a written reason.
* **Python blocks** run in this process, top-level ``await`` allowed (as in
  ``python -m asyncio``), against a real broker on loopback with real agency
  roots (tests/support/agencies.py). Before them the harness makes, in a
  temporary ``CASELINE_HOME`` with ``CASELINE_PASSPHRASE`` set, the profiles
  the README names: ``alice`` (a ke-kra officer) and ``kra-bot`` (ke-kra's
  ``scanner-bot``, a bot with a key file and the ``alert`` and ``read``
  scopes). Blocks of one section share one namespace. The core's block
  (``## Using the core``) gets, from a real case alice just verified:
  ``trust_store`` (her pinned roots), ``device_keys`` (her device's keys),
  ``entries_from_broker`` (the case's entries as ``(seq, kind, body,
  receipt)``), ``now_ms`` and ``note_json`` (a note's JSON bytes).

The first test checks that the set of blocks a plain scan finds is the set
the harness has a rule for, so a block added without one fails here.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess  # the README's own commands  # nosec B404
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from caseline.client import Client, profile_dir

from tests.support.agencies import PASSPHRASE, Network
from tests.support.readme import INERT, PYTHON, README, SHELL, Block, ReadmeError, parse, scan

ROOT = README.parent
BIN = ROOT / ".venv" / "bin"
#: The README's ports, each replaced by a free one in its section.
PORTS = (8443, 8444, 8445, 8446)
#: A port written in a command, a URL or a TOML line: each must be one of PORTS.
PORT_IN_TEXT = re.compile(r"(?::|--port |port = )(\d{4,5})\b")
#: Sections about the checkout itself, run in it rather than in an empty directory.
IN_CHECKOUT = frozenset({"Set-up"})
MAKE = shutil.which("make") or "make"
DONE = "__readme_test_block_done__"
READY = re.compile(r"\bready\b")
BLOCK_TIMEOUT = 300.0

BLOCKS = parse(README.read_text(encoding="utf-8"))
SHELL_SECTIONS = [
    s
    for s in dict.fromkeys(b.section for b in BLOCKS)
    if any(b.lang in SHELL and b.section == s for b in BLOCKS)
]
PYTHON_SECTIONS = [
    s
    for s in dict.fromkeys(b.section for b in BLOCKS)
    if any(b.lang in PYTHON and b.section == s for b in BLOCKS)
]


def test_every_block_has_a_rule() -> None:
    """No block escapes: what a plain scan finds is what the harness runs, or an inert language."""
    found = {(line, lang) for line, lang in scan(README.read_text(encoding="utf-8")) if lang not in INERT}
    handled = {
        (b.line, b.lang) for b in BLOCKS if b.section in SHELL_SECTIONS or b.section in PYTHON_SECTIONS
    }
    assert found == handled, f"blocks with no rule: {sorted(found - handled)}"
    assert {b.rule for b in BLOCKS} <= {"run", "dry-run", "background", "skip", "python"}
    skips = [b.where for b in BLOCKS if b.rule == "skip"]
    assert len(skips) <= 1, f"skip as few blocks as possible: {skips}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("## A\n\n<!-- readme-test: dryrun -->\n```sh\nmake x\n```\n", "unknown readme-test annotation"),
        ("## A\n\n<!-- readme-test: skip later -->\n```sh\nls\n```\n", "reason written out"),
        ("## A\n\n<!-- readme-test: dry-run -->\ntext\n\n```sh\nls\n```\n", "not followed by a block"),
        ("## A\n\n```\nls\n```\n", "no language"),
        ("## A\n\n```zsh\nls\n```\n", "a block in zsh"),
        ("## A\n\n<!-- readme-test: dry-run -->\n```python\npass\n```\n", "for shell blocks only"),
    ],
)
def test_a_block_without_a_valid_rule_is_refused(text: str, why: str) -> None:
    with pytest.raises(ReadmeError, match=why):
        parse(text)


def test_rules_sections_and_console_commands() -> None:
    text = (
        "## One\n\n```sh\necho a\n```\n\n## Two\n\n<!-- readme-test: background until http://h/ -->\n"
        "```console\n$ serve \\\n  --port 1\noutput line\n$ next\n```\n\n```text\nnot run\n```\n"
    )
    one, two = parse(text)
    assert (one.section, one.rule, one.line) == ("One", "run", 3)
    assert (two.section, two.rule, two.arg) == ("Two", "background", "http://h/")
    assert two.commands() == "serve \\\n  --port 1\nnext\n"
    assert [lang for _, lang in scan(text)] == ["sh", "console", "text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    """One ``bash -euo pipefail`` for one README section, fed its blocks in order."""

    def __init__(self, section: str, tmp: Path) -> None:
        self.section = section
        self.tmp = tmp
        self.ports = {str(p): str(free_port()) for p in PORTS}
        work = ROOT if section in IN_CHECKOUT else tmp / "work"
        for d in (tmp / "work", tmp / "home", tmp / "caseline-home"):
            d.mkdir(mode=0o700)
        drop = ("CASELINE_PASSPHRASE", "CASELINE_PROFILE", "CASELINE_HOME", "VIRTUAL_ENV", "MAKEFLAGS")
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("XDG_")}
        self.env |= {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp / "home"),
            "CASELINE_HOME": str(tmp / "caseline-home"),
            "NO_COLOR": "1",
            "COLUMNS": "100",
            # As if typed after ``make run``: the Makefile takes HOST and PORT from the command line
            # only (a shell's own $HOST is its host name), and make reads MAKEFLAGS' variables as such.
            "MAKEFLAGS": f"HOST=127.0.0.1 PORT={self.ports['8443']} DATA={tmp / 'make-run-data'}",
        }
        self.transcript: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.background: list[tuple[int, threading.Thread]] = []
        self.bash = subprocess.Popen(  # nosec B603 - bash reading the README's blocks
            ["/bin/bash", "-euo", "pipefail"],
            cwd=work,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, args=(self.bash.stdout, self.lines), daemon=True)
        self.reader.start()

    @staticmethod
    def _read(stream: Any, into: queue.Queue[str | None]) -> None:
        for line in stream:
            into.put(line)
        into.put(None)

    def text(self, block: Block) -> str:
        text = block.commands()
        unknown = {p for p in PORT_IN_TEXT.findall(text) if p not in self.ports}
        assert not unknown, f"{block.where}: ports {sorted(unknown)} are not in PORTS: add them"
        for old, new in self.ports.items():
            text = text.replace(old, new)
        return text

    def failure(self, block: Block, why: str) -> str:
        output = "".join(self.transcript[-80:])
        return f"{block.where}: {why}\n--- block ---\n{block.text}--- output ---\n{output}"

    def _send(self, script: str) -> None:
        assert self.bash.stdin is not None
        self.bash.stdin.write(script)
        self.bash.stdin.flush()

    def _until_done(self, block: Block) -> list[str]:
        got: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=BLOCK_TIMEOUT)
            except queue.Empty:
                pytest.fail(self.failure(block, f"no end after {BLOCK_TIMEOUT:.0f} s"))
            if line is None:
                pytest.fail(self.failure(block, f"the shell stopped (exit {self.bash.wait()})"))
            if line.strip() == DONE:
                return got
            got.append(line)
            self.transcript.append(line)

    def run(self, block: Block) -> list[str]:
        """Run a block as typed; stdin is /dev/null (a command waiting on it would hang the reader)."""
        self._send(f"{{\n{self.text(block)}\n}} </dev/null\necho {DONE}\n")
        return self._until_done(block)

    def dry_run(self, block: Block) -> None:
        """Every line is ``make TARGET [VAR=VALUE ...]``; ``make -n`` proves the target still exists."""
        for raw in self.text(block).splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = shlex.split(line)
            assert words[0] == "make" and len(words) > 1, self.failure(
                block, f"dry-run is for make only: {line}"
            )
            done = subprocess.run(  # nosec B603 - make -n prints, runs nothing
                [MAKE, "-n", *words[1:]],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, self.failure(block, f"make -n {' '.join(words[1:])}: {done.stderr}")

    def start(self, block: Block) -> None:
        """A server in its own process group, its output through a FIFO read by a thread."""
        fifo = self.tmp / f"background-{block.line}"
        os.mkfifo(fifo, 0o600)
        ready, said = threading.Event(), queue.Queue[str | None]()

        def watch() -> None:
            with open(fifo, encoding="utf-8", errors="replace") as stream:
                for line in stream:
                    self.transcript.append(f"[background] {line}")
                    if READY.search(line):
                        ready.set()
            said.put(None)
            ready.set()

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        into = shlex.quote(str(fifo))
        self._send(
            f'set -m\n{{\n{self.text(block)}\n}} </dev/null >{into} 2>&1 &\necho "$!"\nset +m\necho {DONE}\n'
        )
        pid = int(self._until_done(block)[-1])
        self.background.append((pid, reader))
        assert ready.wait(timeout=120), self.failure(block, "the server never said it was ready")
        assert said.empty(), self.failure(block, "the server stopped before it was ready")
        url = self.text(Block(block.section, block.line, "sh", block.arg, "run"))
        try:
            with urllib.request.urlopen(url.strip(), timeout=30) as answer:  # noqa: S310 - loopback  # nosec B310
                status = answer.status
        except OSError as exc:  # URLError, refused: the server is not where the README says
            pytest.fail(self.failure(block, f"{url.strip()}: {exc}"))
        assert status == 200, self.failure(block, f"{url.strip()} answered {status}")

    def close(self) -> None:
        """Stop what the section started, by process group, then the shell."""
        for pid, reader in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            reader.join(timeout=60)
            if reader.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                reader.join(timeout=30)
        assert self.bash.stdin is not None and self.bash.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.bash.stdin.close()
        try:
            self.bash.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.bash.pid, signal.SIGKILL)
            self.bash.wait()
        self.reader.join(timeout=30)
        self.bash.stdout.close()


@contextlib.contextmanager
def sandbox(section: str, tmp: Path) -> Iterator[Sandbox]:
    box = Sandbox(section, tmp)
    try:
        yield box
    finally:
        box.close()


@pytest.mark.parametrize("section", SHELL_SECTIONS)
def test_shell_blocks_of_a_section_run_as_written(section: str, tmp_path: Path) -> None:
    with sandbox(section, tmp_path) as box:
        for block in (b for b in BLOCKS if b.section == section and b.lang in SHELL):
            if block.rule == "run":
                box.run(block)
            elif block.rule == "dry-run":
                box.dry_run(block)
            elif block.rule == "background":
                box.start(block)
            else:
                assert block.rule == "skip" and block.arg


async def run_python(block: Block, namespace: dict[str, Any]) -> str:
    """Run a block as ``python -m asyncio`` would, top-level ``await`` included; what it printed."""
    code = compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = eval(code, namespace)  # noqa: S307 - the README's own example  # nosec B307
        if result is not None:
            await result
    return printed.getvalue()


async def make_profiles(net: Network, home: Path) -> None:
    """``alice`` (a ke-kra officer) and ``kra-bot`` (a ke-kra bot), as `caseline init` makes them."""
    admin = net.admins["ke-kra"]
    for name, user, role, scopes, key_file in (
        ("alice", "alice.wanjiru", "officer", (), None),
        ("kra-bot", "scanner-bot", "bot", ("alert", "read"), home / "kra-bot.key"),
    ):
        client = await Client.create(
            profile_dir(name),
            agency_id="ke-kra",
            user_id=user,
            server_url=net.url,
            passphrase=None if key_file else PASSPHRASE,
            key_file=key_file,
            kdf="interactive",
        )
        try:
            cert = await admin.issue(await client.enrolment_request(), role=role, scopes=scopes)
            await net.publish("ke-kra")
            for other in net.admins.values():
                await client.trust_add(other.agency_id, other.fingerprint)
            await client.login(cert=cert)
        finally:
            await client.close()


async def core_names(case_id: bytes) -> dict[str, Any]:
    """What ``## Using the core`` names: a real case's entries and alice's trust and keys."""
    async with await Client.open(profile_dir("alice"), passphrase=PASSPHRASE) as alice:
        await alice.sync(case_id)
        entries = await alice.store.entries(case_id, 0)
        return {
            "trust_store": alice.trust,
            "device_keys": alice.keys,
            "entries_from_broker": [(e.seq, e.kind, e.body, e.receipt) for e in entries],
            "now_ms": alice.clock(),
            "note_json": b'{"markings": {"handling": "H2", "tlp": "AMBER"}, "lang": "en", "text": "Hold"}',
        }


async def test_python_blocks_run_against_a_real_broker(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "caseline-home"
    monkeypatch.setenv("CASELINE_HOME", str(home))
    monkeypatch.setenv("CASELINE_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("CASELINE_PROFILE", raising=False)
    await make_profiles(net, tmp_path)
    library: dict[str, Any] = {"__name__": "__readme__"}
    assert PYTHON_SECTIONS == ["Using the library", "Using the core"]
    printed = ""
    for block in (b for b in BLOCKS if b.section == "Using the library"):
        printed += await run_python(block, library)
    assert "ke-kra:scanner-bot alert" in printed, printed
    core: dict[str, Any] = {"__name__": "__readme__", **await core_names(library["case_id"])}
    for block in (b for b in BLOCKS if b.section == "Using the core"):
        printed = await run_python(block, core)
    assert "seizure" in printed or "alert" in printed, printed
    assert core["sealed"].envelope
