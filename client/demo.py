"""``make demo``: a guided tour of caseline with real processes on loopback.

It starts a broker and one witness per agency, creates the Kenya Revenue
Authority and the Tanzania Revenue Authority with a scanner bot, lists each
agency's witness, pins fingerprints both ways, runs a witnessed case from first
report (with a photo and a scanned form, which the partner downloads and
verifies) to evidence bundle, and stops everything it started.  Every step is a
real ``caseline``/``caseline-server``/``caseline-witness`` command, or a
plain shell command (the stand-in files, the piped bot post, the forged
bundle), printed as one
``$ `` line that runs as printed: after the transcript's first lines (``cd``
into the demo's directory, ``export`` its environment) a newcomer can paste
any of them.  Output follows the terminal's width (``COLUMNS``) and is never
cut.  State lives in a temporary directory that is removed at the end
(``--keep DIR`` keeps it).

``make demo-fork`` (``--fork``): the attack the witnesses exist for.  The
broker's operator copies its data directory and starts a second broker on the
copy, with the same key, and routes each agency's officer to another copy.
Both officers post; each one's next command raises the split-view alarm
(exit 3) and saves the two signed checkpoints as proof.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess  # runs our own CLI and broker (SECURITY.md, Supply chain)  # nosec B404
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caseline.schemas.handling import format_time, parse_time

KRA = ("ke-kra", "Kenya Revenue Authority", "KE")
TRA = ("tz-tra", "Tanzania Revenue Authority", "TZ")
PASSPHRASE = "demo passphrase — use a real one"  # noqa: S105 - a throwaway demo  # nosec B105
MODULES = {
    "caseline": "caseline.client.cli",
    "caseline-server": "caseline.server.cli",
    "caseline-witness": "caseline.witness.cli",
}
EXIT_SPLIT_VIEW = 3
#: The seizure report's files (step 5): a photo and a scanned form, a few hundred KiB each.
PHOTO, PHOTO_BYTES = "namanga-tusks.jpg", 300 * 1024
SCAN, SCAN_BYTES = "seizure-form-scan.pdf", 140 * 1024
#: Command output is indented by this much under its ``$ `` line.
INDENT = "  "
#: Flips one bit in the middle of a file: the forgery step 8 catches, as one pasteable command.
FORGE = (
    'import sys; data = bytearray(open(sys.argv[1], "rb").read()); '
    'data[len(data) // 2] ^= 1; open(sys.argv[2], "wb").write(data)'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, root: Path, *, quiet: bool = False) -> None:
        self.root = root.resolve()
        self.quiet = quiet
        #: The terminal's width (COLUMNS when set): commands print for the width left after the indent.
        self.width = max(40, shutil.get_terminal_size((80, 24)).columns)
        self.bin = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "CASELINE_HOME": str(self.root / "home"),
            "CASELINE_PASSPHRASE": PASSPHRASE,
            "NO_COLOR": "1",
            "COLUMNS": str(self.width - len(INDENT)),
        }
        self.url = ""
        self.port = 0
        self.witness_keys: dict[str, str] = {}  # agency -> VKEY@URL
        self.fingerprints: dict[str, str] = {}
        self.last_code = 0

    def step(self, title: str) -> None:
        if self.quiet:
            return
        lead = " " * (len(title) - len(title.lstrip()))  # a sub-step's indent survives the wrapping
        lines = textwrap.wrap(title.strip(), self.width - 4 - len(lead)) or [""]
        heads = [f"── {lead}{lines[0]}", *(f"   {lead}{line}" for line in lines[1:])]
        heads[-1] += " " + "─" * max(0, min(self.width, 74) - len(heads[-1]) - 1)
        print("\n" + "\n".join(heads), flush=True)

    def intro(self) -> None:
        """The lines that make every later ``$ `` line pasteable: where, and with which environment."""
        if self.quiet:
            return
        print("Every command below runs as printed, after these two:")
        print(f"$ cd {shlex.quote(str(self.root))}")
        exports = {k: self.env[k] for k in ("CASELINE_HOME", "CASELINE_PASSPHRASE")}
        path = f'{shlex.quote(self.bin)}:"$PATH"'
        print(f"$ export PATH={path} " + " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items()))

    def show(self, text: str) -> None:
        if not self.quiet:
            for line in text.rstrip().splitlines():
                print(INDENT + line if line else "")

    def sh(self, line: str, *, expect: int = 0) -> str:
        """A plain shell command (a pipe, a file edit), printed as the one line that runs."""
        if not self.quiet:
            print(f"$ {line}", flush=True)
        done = subprocess.run(  # noqa: S603 - a line this script wrote, values shlex-quoted  # nosec B603
            [shutil.which("bash") or "/bin/bash", "-c", line],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.last_code = done.returncode
        if done.returncode != expect:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"demo: `{line}` exited {done.returncode}, expected {expect}")
        self.show(done.stdout + done.stderr)
        return done.stdout

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def run(
        self, *argv: str, expect: int | tuple[int, ...] = 0, stdin: str | None = None, show: bool = True
    ) -> str:
        shown = list(argv)
        command = [sys.executable, "-m", MODULES[argv[0]]]
        accepted = (expect,) if isinstance(expect, int) else expect
        if not self.quiet:
            print("$ " + " ".join(shlex.quote(a) for a in shown), flush=True)
        done = subprocess.run(  # noqa: S603 - our own CLI, arguments from this script  # nosec B603
            [*command, *argv[1:]],
            env=self.env,
            cwd=self.root,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.last_code = done.returncode
        if done.returncode not in accepted:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"demo: `{' '.join(shown)}` exited {done.returncode}, expected {expect}")
        if show:
            self.show(done.stdout + done.stderr)
        return done.stdout

    def json(self, *argv: str, stdin: str | None = None) -> Any:
        out = self.run(argv[0], "--json", *argv[1:], stdin=stdin, show=False)
        data = json.loads(out)
        self.show(json.dumps(data, ensure_ascii=False, indent=2))
        return data

    @contextlib.contextmanager
    def process(self, name: str, *argv: str) -> Iterator[None]:
        """Run ``name`` (caseline-server or caseline-witness) in the background until the block ends.

        Ready when it says so on stdout (an event, not a pause); always stopped and reaped.
        """
        if not self.quiet:
            print("$ " + " ".join(shlex.quote(a) for a in (name, *argv)) + " &", flush=True)
        proc = subprocess.Popen(  # noqa: S603 - our own programs  # nosec B603
            [sys.executable, "-m", MODULES[name], *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
            cwd=self.root,
        )
        try:
            for line in proc.stdout or ():
                if line.strip() == b"ready" or b"caseline broker ready" in line:
                    break
            else:
                raise SystemExit(f"demo: {name} did not start")
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def broker_dir(self) -> Path:
        return self.root / "broker"

    def init_broker(self) -> None:
        self.intro()
        self.run("caseline-server", "--data-dir", "broker", "init")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def broker_running(self, data: Path | None = None, port: int | None = None) -> Iterator[str]:
        """A broker on ``data`` (default: the demo's own) at ``port`` (default: its own); its URL."""
        data = data or self.broker_dir()
        port = port or self.port
        where = str(data.relative_to(self.root))
        with self.process("caseline-server", "--data-dir", where, "serve", "--port", str(port)):
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                self.say(f"\n(broker on port {port} stopped)")

    @contextlib.contextmanager
    def witnesses_running(self) -> Iterator[None]:
        """Each agency's witness: its own key and state, told which broker log to cosign."""
        self.step("0. Each agency starts a witness, on its own machine, for the broker's log")
        out = self.run("caseline-server", "--data-dir", "broker", "log", "vkey")
        log_vkey = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("vkey: "))
        with contextlib.ExitStack() as stack:
            for agency, *_ in (KRA, TRA):
                data = f"witness-{agency}"
                port = free_port()
                self.run(
                    "caseline-witness", "--data-dir", data, "init", "--name", f"witness.{agency}.example/w1"
                )
                self.run("caseline-witness", "--data-dir", data, "log", "add", log_vkey)
                vkey = self.run("caseline-witness", "--data-dir", data, "vkey").strip()
                self.witness_keys[agency] = f"{vkey}@http://127.0.0.1:{port}"
                stack.enter_context(
                    self.process("caseline-witness", "--data-dir", data, "serve", "--port", str(port))
                )
            try:
                yield
            finally:
                self.say("\n(witnesses stopped)")

    def setup(self, people: list[tuple[str, str, str, str]], *, alarm_after: str = "60") -> str:
        """Steps 1-4: agencies, their witnesses, devices, pins, and a witnessed case; its id."""
        self.step("1. Each agency creates its root key and reads the fingerprint to the other")
        fpr = self.fingerprints
        for agency, name, country in (KRA, TRA):
            info = self.json(
                "caseline",
                "--profile",
                f"{agency}-admin",
                "agency",
                "init",
                agency,
                "--kdf",
                "interactive",
            )
            fpr[agency] = info["fingerprint"]
            self.step(f"   the broker's operator registers {name}")
            self.run(
                "caseline-server",
                "--data-dir",
                "broker",
                "agency",
                "add",
                agency,
                "--name",
                name,
                "--country",
                country,
                "--root-key",
                info["root_key"],
            )
            self.step(f"   {name} lists its witness (signed by its root, so partners pin it through it)")
            self.run(
                "caseline",
                "--profile",
                f"{agency}-admin",
                "agency",
                "witnesses",
                "--witness",
                self.witness_keys[agency],
            )

        self.step("2. Officers and a bot create device keys; administrators certify them")
        for profile, agency, user, role in people:
            extra = ["--key-file", "scanner-bot.key"] if role == "bot" else ["--kdf", "interactive"]
            self.run(
                "caseline",
                "--profile",
                profile,
                "init",
                "--agency",
                agency,
                "--user",
                user,
                "--server",
                self.url,
                "--request-out",
                f"{profile}.req",
                *extra,
            )
            scopes = ["--scope", "alert", "--scope", "read"] if role == "bot" else []
            self.run(
                "caseline",
                "--profile",
                f"{agency}-admin",
                "agency",
                "issue",
                f"{profile}.req",
                "--role",
                role,
                *scopes,
                "-o",
                f"{profile}.cert",
            )
        for agency in (KRA[0], TRA[0]):
            self.run("caseline", "--profile", f"{agency}-admin", "agency", "publish", "--server", self.url)

        self.step("3. Every device pins both agencies by fingerprint, then logs in")
        for profile, *_ in people:
            for agency in (KRA[0], TRA[0]):
                self.run("caseline", "--profile", profile, "trust", "add", agency, fpr[agency], show=False)
            self.run("caseline", "--profile", profile, "login", "--cert", f"{profile}.cert")

        self.step("4. Alice (KRA) opens a case witnessed by both agencies' witnesses")
        members = ["--member", "ke-kra:scanner-bot"] if any(p[3] == "bot" for p in people) else []
        case: str = self.json(
            "caseline",
            "--profile",
            "alice",
            "case",
            "create",
            "--title",
            "Operation Kilimanjaro",
            "--reference",
            "KE-2026-0042",
            "--handling",
            "H2",
            "--tlp",
            "AMBER",
            "--witnessed",
            "--alarm-after",
            alarm_after,
            *members,
        )["case_id"]
        return case

    def until_final(self, profile: str, case: str) -> None:
        """Ask until the witnesses have cosigned every entry (bounded; each ask is a command)."""
        deadline = time.monotonic() + 30
        while True:
            data = self.run("caseline", "--profile", profile, "--json", "case", "show", case, show=False)
            if json.loads(data)["witness"]["pending"] == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit("demo: the witnesses did not cosign within 30 s")

    def received(self, case: str, update: str) -> None:
        """Juma lists the seizure report's files, downloads them verified, and compares the hashes."""
        self.step("   Juma lists the report's files and downloads them; each is verified before it is saved")
        self.run("caseline", "--profile", "juma", "attachments", case, update)
        (self.root / "received").mkdir()
        self.run("caseline", "--profile", "juma", "get", case, update, "--out", "received")
        self.sh(f"sha256sum {PHOTO} received/{PHOTO} {SCAN} received/{SCAN}")
        for name in (PHOTO, SCAN):
            if (self.root / name).read_bytes() != (self.root / "received" / name).read_bytes():
                raise SystemExit(f"demo: {name} arrived different")

    def story(self) -> dict[str, Any]:
        self.init_broker()
        with self.witnesses_running(), self.broker_running():
            fpr = self.fingerprints
            people = [
                ("alice", KRA[0], "alice.wanjiru", "officer"),
                ("juma", TRA[0], "juma.mussa", "officer"),
                ("bot", KRA[0], "scanner-bot", "bot"),
            ]
            case = self.setup(people)
            self.step("   ... then invites Juma (TRA)")
            self.run("caseline", "--profile", "alice", "case", "add", case, "tz-tra:juma.mussa")

            self.step("5. A seizure report with a photo and a scanned form, a reply, and a bot alert")
            self.say("   (stand-ins for the officer's photo and scan: random bytes under those names)")
            self.sh(
                f"head -c {PHOTO_BYTES} /dev/urandom > {PHOTO} && head -c {SCAN_BYTES} /dev/urandom > {SCAN}"
            )
            seizure = self.json(
                "caseline",
                "--profile",
                "alice",
                "post",
                case,
                "--attach",
                PHOTO,
                "--attach",
                SCAN,
                "--type",
                "seizure",
                "--field",
                "occurred_at=2026-11-20T06:40:00Z",
                "--field",
                "place.name=Namanga one-stop border post",
                "--field",
                "place.country=KE",
                "--field",
                'goods:=[{"description": "ivory tusks", "quantity": 42, "unit": "kg"}]',
                "--field",
                "markings.source_reliability=B",
                "--field",
                "markings.information_assessment=2",
            )
            self.run("caseline", "--profile", "juma", "case", "list")
            self.received(case, seizure["update_id"][:8])
            self.run(
                "caseline",
                "--profile",
                "juma",
                "post",
                case,
                "--type",
                "reply",
                "--field",
                f"in_reply_to={seizure['update_id']}",
                "--field",
                "text=The consignee is known to us: a trading company in Arusha. Details follow.",
            )
            alert = {
                "subject_kind": "container",
                "subject": {"mode": "road", "container": "MSKU1234565"},
                "reason": "X-ray anomaly matching the Namanga seizure pattern",
                "action_requested": "stop_and_check",
            }
            self.sh(
                f"printf '%s\\n' {shlex.quote(json.dumps(alert))}"
                f" | caseline --profile bot post {case} --type alert"
            )
            self.until_final("juma", case)
            self.run("caseline", "--profile", "juma", "case", "show", case)
            self.step("   the witnesses that vouch for this history, as each agency listed them")
            for agency in (KRA[0], TRA[0]):
                self.run("caseline", "--profile", f"{agency}-admin", "agency", "witnesses")

            self.step("6. The bot leaves the case; it cannot read what follows")
            self.run("caseline", "--profile", "alice", "case", "remove", case, "ke-kra:scanner-bot")
            self.run(
                "caseline",
                "--profile",
                "alice",
                "post",
                case,
                "--type",
                "status",
                "--field",
                "status=active",
                "--field",
                "reason=Joint operation agreed with TRA",
            )
            self.run("caseline", "--profile", "bot", "case", "show", case, expect=4)

            self.step("7. Both sides verify the whole case and compare head codes by phone")
            a = self.json("caseline", "--profile", "alice", "verify", case)
            j = self.json("caseline", "--profile", "juma", "verify", case)
            if a["head_code"] != j["head_code"]:
                raise SystemExit("demo: the two sides hold different histories")
            if not self.quiet:
                print(f"  alice reads {a['head_code']}, juma reads {j['head_code']}: the same history")

            self.step("8. Evidence: export, verify offline with only the fingerprints, and catch a forgery")
            bundle = "kilimanjaro.evidence"
            self.run("caseline", "--profile", "alice", "evidence", "export", case, "-o", bundle)
            pins = ["--pin", f"ke-kra={fpr['ke-kra']}", "--pin", f"tz-tra={fpr['tz-tra']}"]
            self.run("caseline", "evidence", "verify", bundle, *pins)
            self.say("   a forger flips one bit in the middle of the bundle:")
            self.sh(f"python -c {shlex.quote(FORGE)} {bundle} forged.evidence")
            self.run("caseline", "evidence", "verify", "forged.evidence", *pins, expect=3)
            self.say("   the export for court: the bundle, the seizure report's photo and scan, a manifest;")
            self.say("   each file is checked offline against the size and SHA-256 its sender signed")
            export = "kilimanjaro-export"
            export_cmd = ("caseline", "--profile", "alice", "evidence", "export", case, "-o", export)
            self.run(*export_cmd, "--with-attachments")
            self.run("caseline", "evidence", "verify", export, *pins)
            self.say("   one bit of the photo changed in a copy of the export:")
            self.sh(
                f"cp -r {export} altered-export && f=$(ls altered-export/attachments/*-{PHOTO}) "
                f'&& python -c {shlex.quote(FORGE)} "$f" "$f"'
            )
            self.run("caseline", "evidence", "verify", "altered-export", *pins, expect=3)
            workflow = self.assistance(case, pins)
        return {"case_id": case, "head_code": a["head_code"], "fingerprints": fpr, **workflow}

    def post(self, profile: str, case: str, content_type: str, *fields: str) -> int:
        """``caseline post`` of one update, its fields as ``--field`` arguments; its log position."""
        args = [arg for field in fields for arg in ("--field", field)]
        out = self.run("caseline", "--profile", profile, "post", case, "--type", content_type, *args)
        found = re.search(rf"posted {content_type} #(\d+) id ", out)
        if found is None:
            raise SystemExit(f"demo: caseline post did not say where the {content_type} went")
        return int(found[1])

    def assistance(self, case: str, pins: list[str]) -> dict[str, Any]:
        """Steps 9-12: a request for assistance KRA -> TRA, its deadline, acks, answer, release."""
        self.step("9. Alice asks TRA for assistance: urgent, not directly accessible (3 days, Art. 5)")
        request = self.post(
            "alice",
            case,
            "request",
            "subject=Company register extract and bank details of the Arusha consignee",
            "category=urgent-indirect",
            'to:=["tz-tra"]',
            "legal_basis=EU Directive 2023/977 Art. 5",
        )
        self.step("   what each side's desk sees: TRA owes the answer, KRA is owed it, soonest first")
        self.run("caseline", "--profile", "juma", "due")
        asked = self._row(self.json("caseline", "--profile", "alice", "due"), "owed", request)

        self.step("10. Juma acknowledges, then extends once: the bank details need a judge's order")
        ref = f"#{request}"
        self.post("juma", case, "ack", f"of={ref}", "state=received")
        extended = format_time(parse_time(asked["deadline"]) + 2 * 86_400_000)
        self.post(
            "juma",
            case,
            "ack",
            f"of={ref}",
            "state=extended",
            "extension_reason=judicial-authorisation",
            f"deadline={extended}",
            "note=The bank details need an order from the Arusha resident magistrate.",
        )
        self.run("caseline", "--profile", "juma", "due")
        moved = self._row(self.json("caseline", "--profile", "alice", "due"), "owed", request)

        self.step("11. Juma answers (H2), acknowledges it answered, and releases the answer for evidence")
        answer = self.post(
            "juma",
            case,
            "reply",
            f"in_reply_to={ref}",
            "text=Arusha Trading Ltd, reg. 114/2019; its CRDB account is frozen by order 17/2026.",
            "markings.handling=H2",
        )
        answer_id = self.update_id("juma", case, answer)
        self.post("juma", case, "ack", f"of={ref}", "state=answered", f"answer={answer_id}")
        self.run(
            "caseline",
            "--profile",
            "juma",
            "release",
            case,
            f"#{answer}",
            "--for",
            "evidence",
            "--note",
            "Released for the prosecution of the Namanga seizure",
        )
        for profile in ("juma", "alice"):
            self.run("caseline", "--profile", profile, "due")

        self.step("12. Alice puts TRA's answer into evidence: the release goes with it and is checked")
        self.until_final("alice", case)
        bundle = "assistance.evidence"
        self.run(
            "caseline", "--profile", "alice", "evidence", "export", case, "-o", bundle, "--seq", str(answer)
        )
        self.run("caseline", "evidence", "verify", bundle, *pins)
        self.step("   reciprocity: how TRA answered KRA's requests")
        self.run("caseline", "--profile", "alice", "stats", "--partner", "tz-tra")
        return {"request": request, "asked": asked, "extended": moved, "answer": answer, "evidence": bundle}

    def update_id(self, profile: str, case: str, seq: int) -> str:
        """The full id of the update at ``seq``, which a field such as an ack's ``answer`` takes."""
        shown = json.loads(
            self.run("caseline", "--profile", profile, "--json", "case", "show", case, show=False)
        )
        return str(next(e["update_id"] for e in shown["events"] if e["seq"] == seq and e["kind"] == "update"))

    @staticmethod
    def _row(due: dict[str, Any], side: str, seq: int) -> dict[str, Any]:
        """The request's row in ``caseline --json due``, which must list it."""
        for row in due[side]:
            if row["seq"] == seq:
                return dict(row)
        raise SystemExit(f"demo: caseline due does not list the request under {side!r}")

    def fork(self) -> dict[str, Any]:
        """The operator forks the broker from a copy of its data; both officers raise the alarm."""
        people = [("alice", KRA[0], "alice.wanjiru", "officer"), ("juma", TRA[0], "juma.mussa", "officer")]
        self.init_broker()
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.witnesses_running())
            with self.broker_running():
                case = self.setup(people, alarm_after="1")
                self.run("caseline", "--profile", "alice", "case", "add", case, "tz-tra:juma.mussa")
                self.until_final("alice", case)
                self.run("caseline", "--profile", "juma", "case", "show", case)
            self.step("5. A compromised operator copies the broker's data directory (same key)")
            copy = self.root / "broker-copy"
            self.sh("cp -a broker broker-copy")
            stack.enter_context(self.broker_running())
            other = stack.enter_context(self.broker_running(copy, free_port()))
            self.step("   ... and sends TRA's officer to the copy (a DNS entry, a proxy: Juma cannot tell)")
            self.run("caseline", "--profile", "juma", "login", "--server", other)

            self.step("6. Each officer posts on their own branch of the history")
            for profile, text in (("alice", "Container MSKU1234565 released"), ("juma", "Hold MSKU1234565")):
                self.run(
                    "caseline",
                    "--profile",
                    profile,
                    "post",
                    case,
                    "--type",
                    "status",
                    "--field",
                    "status=active",
                    "--field",
                    f"reason={text}",
                    expect=(0, EXIT_SPLIT_VIEW),
                )

            self.step("7. Their next commands raise the split-view alarm (exit 3), with proof kept")
            codes = {}
            for profile in ("alice", "juma"):
                deadline = time.monotonic() + 30
                while True:
                    self.run(
                        "caseline", "--profile", profile, "case", "show", case, expect=(0, EXIT_SPLIT_VIEW)
                    )
                    if self.last_code == EXIT_SPLIT_VIEW or time.monotonic() > deadline:
                        break
                codes[profile] = self.last_code
            if set(codes.values()) != {EXIT_SPLIT_VIEW}:
                raise SystemExit(f"demo: the fork went unnoticed: {codes}")
            origin = re.compile(r"^(caseline\.log/[0-9a-f]{64})\n(\d+)\n(\S{44})$", re.M)
            for profile in ("alice", "juma"):
                proofs = sorted((self.root / "home" / "profiles" / profile / "alarms").glob("*"))
                if not proofs:
                    raise SystemExit(f"demo: {profile} kept no proof")
                shown = sorted({(int(m[2]), m[3]) for m in origin.finditer(proofs[0].read_text())})
                self.say(f"\n  {profile}'s proof ({proofs[0].name}): the broker signed")
                for size, root_hash in shown:
                    self.say(f"    a tree of {size} entries with root {root_hash}")
        return {"case_id": case, "alarms": codes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", help="keep all state in this directory instead of a temporary one")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--fork", action="store_true", help="stage a forked broker and show the alarm")
    args = parser.parse_args(argv)

    def play(root: Path) -> None:
        demo = Demo(root, quiet=args.quiet)
        demo.fork() if args.fork else demo.story()

    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=False)
        play(root)
    else:
        with tempfile.TemporaryDirectory(prefix="caseline-demo-") as tmp:
            play(Path(tmp))
    if not args.quiet:
        print("\nDemo complete: nothing is left running.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
