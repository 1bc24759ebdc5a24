"""``make demo``: a guided tour of caseline with real processes on loopback.

It starts a broker, creates the Kenya Revenue Authority and the Tanzania
Revenue Authority with a scanner bot, pins fingerprints both ways, runs a case
from first report to evidence bundle, and stops everything it started.  Every
step is a real ``caseline``/``caseline-server`` command, printed as typed, so a
newcomer can repeat any of them by hand.  State lives in a temporary directory
that is removed at the end (``--keep DIR`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import subprocess  # runs our own CLI and broker (SECURITY.md, Supply chain)  # nosec B404
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KRA = ("ke-kra", "Kenya Revenue Authority", "KE")
TRA = ("tz-tra", "Tanzania Revenue Authority", "TZ")
PASSPHRASE = "demo passphrase — use a real one"  # noqa: S105 - a throwaway demo  # nosec B105


class Demo:
    def __init__(self, root: Path, *, quiet: bool = False) -> None:
        self.root = root
        self.quiet = quiet
        self.env = {
            **os.environ,
            "CASELINE_HOME": str(root / "home"),
            "CASELINE_PASSPHRASE": PASSPHRASE,
            "NO_COLOR": "1",
            "COLUMNS": "110",
        }
        self.broker: subprocess.Popen[bytes] | None = None
        self.url = ""

    def step(self, title: str) -> None:
        if not self.quiet:
            print(f"\n── {title} " + "─" * max(0, 70 - len(title)), flush=True)

    def run(self, *argv: str, expect: int = 0, stdin: str | None = None, show: bool = True) -> str:
        shown = ["caseline" if argv[0] == "caseline" else argv[0], *argv[1:]]
        command = [
            sys.executable,
            "-m",
            "caseline.client.cli" if argv[0] == "caseline" else "caseline.server.cli",
        ]
        if not self.quiet:
            print("$ " + " ".join(shlex.quote(a) for a in shown), flush=True)
        done = subprocess.run(  # noqa: S603 - our own CLI, arguments from this script  # nosec B603
            [*command, *argv[1:]],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != expect:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"demo: `{' '.join(shown)}` exited {done.returncode}, expected {expect}")
        if show and not self.quiet:
            for line in (done.stdout + done.stderr).rstrip().splitlines():
                print("  " + line)
        return done.stdout

    def json(self, *argv: str, stdin: str | None = None) -> Any:
        out = self.run(argv[0], "--json", *argv[1:], stdin=stdin, show=False)
        data = json.loads(out)
        if not self.quiet:
            print("  " + json.dumps(data, ensure_ascii=False)[:300])
        return data

    @contextlib.contextmanager
    def broker_running(self) -> Iterator[None]:
        data = self.root / "broker"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.run("caseline-server", "--data-dir", str(data), "init")
        self.url = f"http://127.0.0.1:{port}"
        if not self.quiet:
            print(f"$ caseline-server --data-dir {data} serve --port {port} &", flush=True)
        self.broker = subprocess.Popen(  # noqa: S603 - our own broker  # nosec B603
            [
                sys.executable,
                "-m",
                "caseline.server.cli",
                "--data-dir",
                str(data),
                "serve",
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        try:
            for line in self.broker.stdout or ():  # wait for the event: the broker says it listens
                if b"caseline broker ready" in line:
                    break
            else:
                raise SystemExit("demo: the broker did not start")
            yield
        finally:
            self.broker.terminate()
            self.broker.wait(timeout=30)
            if not self.quiet:
                print("\n(broker stopped)")

    def story(self) -> dict[str, Any]:
        root = self.root
        with self.broker_running():
            self.step("1. Each agency creates its root key and reads the fingerprint to the other")
            fpr = {}
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
                    str(root / "broker"),
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

            self.step("2. Officers and a bot create device keys; administrators certify them")
            people = [
                ("alice", KRA[0], "alice.wanjiru", "officer"),
                ("juma", TRA[0], "juma.mussa", "officer"),
                ("bot", KRA[0], "scanner-bot", "bot"),
            ]
            for profile, agency, user, role in people:
                extra = (
                    ["--key-file", str(root / "scanner-bot.key")]
                    if role == "bot"
                    else ["--kdf", "interactive"]
                )
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
                    str(root / f"{profile}.req"),
                    *extra,
                )
                scopes = ["--scope", "alert", "--scope", "read"] if role == "bot" else []
                self.run(
                    "caseline",
                    "--profile",
                    f"{agency}-admin",
                    "agency",
                    "issue",
                    str(root / f"{profile}.req"),
                    "--role",
                    role,
                    *scopes,
                    "-o",
                    str(root / f"{profile}.cert"),
                )
            for agency in (KRA[0], TRA[0]):
                self.run(
                    "caseline", "--profile", f"{agency}-admin", "agency", "publish", "--server", self.url
                )

            self.step("3. Every device pins both agencies by fingerprint, then logs in")
            for profile, *_ in people:
                for agency in (KRA[0], TRA[0]):
                    self.run("caseline", "--profile", profile, "trust", "add", agency, fpr[agency])
                self.run("caseline", "--profile", profile, "login", "--cert", str(root / f"{profile}.cert"))

            self.step("4. Alice (KRA) opens a case with the bot, then invites Juma (TRA)")
            case = self.json(
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
                "--member",
                "ke-kra:scanner-bot",
            )["case_id"]
            self.run("caseline", "--profile", "alice", "case", "add", case, "tz-tra:juma.mussa")

            self.step("5. A seizure report, a reply from across the border, and a bot alert")
            seizure = self.json(
                "caseline",
                "--profile",
                "alice",
                "post",
                case,
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
            if not self.quiet:
                print(f"$ echo '{json.dumps(alert)}' \\")
            self.run(
                "caseline",
                "--profile",
                "bot",
                "post",
                case,
                "--type",
                "alert",
                stdin=json.dumps(alert),
                show=True,
            )
            self.run("caseline", "--profile", "juma", "case", "show", case)

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
            bundle = root / "kilimanjaro.evidence"
            self.run("caseline", "--profile", "alice", "evidence", "export", case, "-o", str(bundle))
            pins = ["--pin", f"ke-kra={fpr['ke-kra']}", "--pin", f"tz-tra={fpr['tz-tra']}"]
            self.run("caseline", "evidence", "verify", str(bundle), *pins)
            forged = root / "forged.evidence"
            data = bytearray(bundle.read_bytes())
            data[len(data) // 2] ^= 0x01
            forged.write_bytes(bytes(data))
            self.run("caseline", "evidence", "verify", str(forged), *pins, expect=3)
        return {"case_id": case, "head_code": a["head_code"], "fingerprints": fpr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", help="keep all state in this directory instead of a temporary one")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=False)
        Demo(root, quiet=args.quiet).story()
    else:
        with tempfile.TemporaryDirectory(prefix="caseline-demo-") as tmp:
            Demo(Path(tmp), quiet=args.quiet).story()
    if not args.quiet:
        print("\nDemo complete: nothing is left running.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
