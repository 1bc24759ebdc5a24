"""caseline's checkpoints against litewitness, a published C2SP tlog-witness (torchwood).

The scenario: a fresh Ed25519 witness key in a private ssh-agent, litewitness on a
loopback port with its SQLite database in a temporary directory, a log registered with
``witnessctl`` under the origin and vkey that caseline's code makes, then checkpoints
that caseline's code signs, sent as tlog-witness ``add-checkpoint`` requests.  Every
cosignature litewitness returns is checked with ``caseline.crypto.note``; a stale old
size, a fork, a checkpoint signed by the wrong key and an unknown log must be refused.

Used by ``tests/test_witness_interop.py`` (which skips without a litewitness binary)
and by ``bench/interop.sh`` (``make interop``), which builds one first:

    python -m tests.support.litewitness --litewitness PATH [--witnessctl PATH]

Exits 0 when every step agreed, 1 otherwise.  Nothing here sleeps to synchronise: the
witness is ready when its port accepts a connection, polled within a deadline.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from caseline.crypto import merkle, note
from caseline.crypto.primitives import ed25519_keypair_from_seed
from caseline.schemas.errors import MalformedError

WITNESS_NAME = "witness.caseline.test/litewitness"
READY_TIMEOUT = 15.0
REQUEST_TIMEOUT = 10.0


class InteropError(Exception):
    """A step where litewitness and caseline disagreed, or the witness would not run."""


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass
class Report:
    steps: list[tuple[str, int, str]] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    def disagree(self, what: str) -> None:
        self.disagreements.append(what)
        print(f"DISAGREEMENT: {what}", flush=True)

    def add(self, step: str, status: int, outcome: str) -> None:
        self.steps.append((step, status, outcome))
        print(f"{step:<44} HTTP {status}  {outcome}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Until the port accepts a connection; fails early if the process has exited."""
    while True:
        if proc.poll() is not None:
            raise InteropError(f"litewitness exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise InteropError(
                    f"litewitness did not accept connections within {READY_TIMEOUT} s"
                ) from None
        # Retry at most 50 times a second; the loop ends on the event or the deadline.
        time.sleep(0.02)


def tool(name: str) -> str:
    """The absolute path of an OpenSSH tool (Debian package openssh-client)."""
    found = shutil.which(name)
    if found is None:
        raise InteropError(f"{name} is missing: install openssh-client")
    return found


def ssh_public_key(pub_line: str) -> bytes:
    """The raw Ed25519 key in an OpenSSH ``ssh-ed25519 BASE64 comment`` line."""
    blob = base64.b64decode(pub_line.split()[1])
    kind_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + kind_len] != b"ssh-ed25519":
        raise InteropError("ssh-keygen made a key that is not Ed25519")
    rest = blob[4 + kind_len :]
    key_len = int.from_bytes(rest[:4], "big")
    key = rest[4 : 4 + key_len]
    if key_len != 32 or len(key) != 32:
        raise InteropError("unexpected Ed25519 public key length in the OpenSSH key")
    return key


class LiteWitness:
    """One litewitness process, its ssh-agent and its database; stopped by PID on exit."""

    def __init__(self, litewitness: Path, witnessctl: Path, workdir: Path) -> None:
        self.litewitness, self.witnessctl, self.dir = litewitness, witnessctl, workdir
        self.db = workdir / "litewitness.db"
        self.sock = workdir / "agent.sock"
        self.log_path = workdir / "litewitness.log"
        self.port = 0
        self.public_key = b""
        self.started_vkey = ""
        self._agent: subprocess.Popen[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.witnessctl), *args, "-db", str(self.db)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise InteropError(f"witnessctl {args[0]} failed: {out.stderr.strip()}")
        return out.stdout + out.stderr

    def start(self) -> None:
        key = self.dir / "witness_ed25519"
        subprocess.run(
            [tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "caseline-interop", "-f", str(key)],
            check=True,
            timeout=30,
        )
        self.public_key = ssh_public_key((self.dir / "witness_ed25519.pub").read_text())
        # ``-D``: the agent stays in the foreground, so this process owns it and stops it.
        self._agent = subprocess.Popen(
            [tool("ssh-agent"), "-D", "-a", str(self.sock)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {**os.environ, "SSH_AUTH_SOCK": str(self.sock)}
        deadline = time.monotonic() + READY_TIMEOUT
        while subprocess.run(
            [tool("ssh-add"), "-q", str(key)], check=False, env=env, capture_output=True, timeout=30
        ).returncode:
            if self._agent.poll() is not None or time.monotonic() > deadline:
                raise InteropError("ssh-agent did not take the witness key")
            time.sleep(0.02)  # bounded retry until the agent's socket exists
        fingerprint = subprocess.run(
            [tool("ssh-keygen"), "-l", "-E", "sha256", "-f", str(key) + ".pub"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()[1]
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.litewitness),
                    "-db",
                    str(self.db),
                    "-name",
                    WITNESS_NAME,
                    "-key",
                    fingerprint,
                    "-ssh-agent",
                    str(self.sock),
                    "-listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self._proc, time.monotonic() + READY_TIMEOUT)
        found = re.search(r"vkey=(\S+)", self.log_path.read_text(errors="replace"))
        self.started_vkey = found.group(1) if found else ""

    def stop(self) -> None:
        for proc in (self._proc, self._agent):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def add_checkpoint(self, body: bytes) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("POST", "/add-checkpoint", body=body)
            resp = conn.getresponse()
            return Answer(resp.status, resp.getheader("Content-Type", ""), resp.read())
        finally:
            conn.close()


@contextmanager
def running_witness(litewitness: Path, witnessctl: Path) -> Iterator[LiteWitness]:
    with tempfile.TemporaryDirectory(prefix="caseline-litewitness-") as tmp:
        witness = LiteWitness(litewitness, witnessctl, Path(tmp))
        try:
            witness.start()
            yield witness
        except BaseException:
            if witness.log_path.exists():
                sys.stderr.write("--- litewitness log ---\n" + witness.log_path.read_text(errors="replace"))
            raise
        finally:
            witness.stop()


@dataclass
class Log:
    """A caseline log as the broker keeps it: a key, its origin, a tree of leaves."""

    public_key: bytes
    secret_key: bytes
    tree: merkle.Tree

    @classmethod
    def fresh(cls, leaves: range, tag: bytes = b"entry", *, plus_in_vkey: bool = False) -> Log:
        """A new log; ``plus_in_vkey`` picks a key whose vkey's base64 holds '+' and '/'."""
        seed = os.urandom(32)
        for i in range(10_000 if plus_in_vkey else 0):
            seed = hashlib.sha256(b"caseline interop log key %d" % i).digest()
            b64key = base64.b64encode(b"\x01" + ed25519_keypair_from_seed(seed)[0]).decode()
            if "+" in b64key and "/" in b64key:
                break
        public_key, secret_key = ed25519_keypair_from_seed(seed)
        log = cls(public_key, secret_key, merkle.Tree())
        _LOG_KEYS[log.origin] = public_key
        log.grow(leaves, tag)
        return log

    def grow(self, leaves: range, tag: bytes = b"entry") -> None:
        for i in leaves:
            self.tree.append(merkle.leaf_hash(tag + b" %d" % i))

    @property
    def origin(self) -> str:
        return note.log_origin(self.public_key)

    @property
    def vkey(self) -> str:
        return note.vkey(self.origin, note.ALG_ED25519, self.public_key)

    def checkpoint(self, size: int, *, signer: bytes | None = None) -> bytes:
        """The checkpoint text for ``size`` leaves and the signed note carrying it."""
        text = note.Checkpoint(self.origin, size, self.tree.root(size)).body()
        sig = note.sign_note(text, name=self.origin, secret_key=signer or self.secret_key)
        return note.Note(text, (sig,)).encode()


def add_checkpoint_body(old: int, proof: list[bytes], signed_note: bytes) -> bytes:
    """A tlog-witness add-checkpoint request: ``old N``, proof lines, blank line, note."""
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n").encode() + signed_note


def check_cosigned(
    witness: LiteWitness, answer: Answer, signed_note: bytes, report: Report, step: str
) -> None:
    if answer.status != 200:
        raise InteropError(f"{step}: litewitness answered {answer.status}: {answer.body!r}")
    text = note.Note.parse(signed_note).text
    sigs = note.parse_signature_lines(answer.body)
    mine = [s for s in sigs if s.name == WITNESS_NAME]
    if len(mine) != 1:
        raise InteropError(f"{step}: expected one cosignature by {WITNESS_NAME}, got {answer.body!r}")
    stamp = note.verify_cosignature(text, mine[0], name=WITNESS_NAME, public_key=witness.public_key)
    # The cosignature appended to the log's note: one signed note that both verify.
    cosigned = note.Note.parse(signed_note + answer.body)
    note.verify_note(cosigned, name=note.Checkpoint.parse(text).origin, public_key=_log_key(signed_note))
    if (
        note.verify_cosignature(
            cosigned.text, cosigned.signatures[-1], name=WITNESS_NAME, public_key=witness.public_key
        )
        != stamp
    ):
        raise InteropError(f"{step}: the cosigned note does not carry the same cosignature")
    if abs(stamp - time.time()) > 300:
        raise InteropError(f"{step}: cosignature timestamp {stamp} is not now")
    report.add(step, answer.status, f"cosignature/v1 verified by caseline (time {stamp})")


_LOG_KEYS: dict[str, bytes] = {}


def _log_key(signed_note: bytes) -> bytes:
    return _LOG_KEYS[note.Checkpoint.parse(note.Note.parse(signed_note).text).origin]


def expect_refusal(answer: Answer, statuses: tuple[int, ...], report: Report, step: str) -> None:
    if answer.status not in statuses:
        raise InteropError(
            f"{step}: expected {statuses}, litewitness answered {answer.status}: {answer.body!r}"
        )
    report.add(step, answer.status, "refused: " + answer.body.decode(errors="replace").strip())


def run(litewitness: Path, witnessctl: Path) -> Report:
    report = Report()
    log = Log.fresh(range(5), plus_in_vkey=True)
    with running_witness(litewitness, witnessctl) as witness:
        ours = note.vkey(WITNESS_NAME, note.ALG_COSIGNATURE_V1, witness.public_key)
        if witness.started_vkey != ours:
            raise InteropError(
                f"witness vkey: litewitness says {witness.started_vkey!r}, caseline makes {ours}"
            )
        print(f"witness vkey (litewitness = caseline): {ours}", flush=True)
        for vk in (ours, log.vkey):
            try:
                note.parse_vkey(vk)
            except MalformedError as exc:
                report.disagree(f"caseline's parse_vkey refuses the vkey {vk} that it made: {exc}")

        witness.ctl("add-log", "-origin", log.origin)
        witness.ctl("add-key", "-origin", log.origin, "-key", log.vkey)
        print(f"log registered: {log.vkey}", flush=True)

        first = log.checkpoint(5)
        check_cosigned(
            witness,
            witness.add_checkpoint(add_checkpoint_body(0, [], first)),
            first,
            report,
            "old 0 -> size 5",
        )

        log.grow(range(5, 12))
        second = log.checkpoint(12)
        proof = log.tree.consistency_proof(5, 12)
        answer = witness.add_checkpoint(add_checkpoint_body(5, proof, second))
        check_cosigned(witness, answer, second, report, f"old 5 -> size 12 ({len(proof)}-hash proof)")

        again = witness.add_checkpoint(add_checkpoint_body(12, [], second))
        check_cosigned(witness, again, second, report, "old 12 -> size 12 (same tree again)")

        stale = witness.add_checkpoint(add_checkpoint_body(5, proof, second))
        expect_refusal(stale, (409,), report, "old 5 again (stale old size)")
        if stale.body != b"12\n" or stale.content_type != "text/x.tlog.size":
            raise InteropError(
                f"409 should carry text/x.tlog.size 12, got {stale.content_type} {stale.body!r}"
            )

        # A fork: same key and origin, different history, so no honest proof exists.
        fork = Log(log.public_key, log.secret_key, merkle.Tree())
        fork.grow(range(20), b"forged")
        forked = fork.checkpoint(20)
        bad = witness.add_checkpoint(add_checkpoint_body(12, fork.tree.consistency_proof(12, 20), forked))
        expect_refusal(bad, (409, 422), report, "old 12 -> forked size 20")

        log.grow(range(12, 20))
        wrong_key = ed25519_keypair_from_seed(os.urandom(32))[1]
        spoofed = log.checkpoint(20, signer=wrong_key)
        answer = witness.add_checkpoint(add_checkpoint_body(12, log.tree.consistency_proof(12, 20), spoofed))
        expect_refusal(answer, (403,), report, "size 20 signed by another key")

        stranger = Log.fresh(range(3))
        answer = witness.add_checkpoint(add_checkpoint_body(0, [], stranger.checkpoint(3)))
        expect_refusal(answer, (404, 403), report, "unknown log")
        if answer.status != 404:
            print("  note: c2sp.org/tlog-witness says 404 Not Found for an unknown origin", flush=True)

        third = log.checkpoint(20)
        answer = witness.add_checkpoint(add_checkpoint_body(12, log.tree.consistency_proof(12, 20), third))
        check_cosigned(witness, answer, third, report, "old 12 -> size 20 (after the refusals)")

        # A note that already carries another witness's cosignature (as the broker
        # serves it): litewitness must ignore the key it does not know.
        other_pk, other_sk = ed25519_keypair_from_seed(os.urandom(32))
        log.grow(range(20, 33))
        text = note.Note.parse(log.checkpoint(33)).text
        other = note.cosign(
            text, name="other.example/witness", secret_key=other_sk, timestamp=int(time.time())
        )
        note.verify_cosignature(text, other, name="other.example/witness", public_key=other_pk)
        carried = note.Note(text, (*note.Note.parse(log.checkpoint(33)).signatures, other)).encode()
        answer = witness.add_checkpoint(add_checkpoint_body(20, log.tree.consistency_proof(20, 33), carried))
        check_cosigned(witness, answer, carried, report, "old 20 -> size 33 (note already cosigned)")

        # Proof shapes: every consistency proof on this walk is checked by Go's tlog.
        sweep = Log.fresh(range(0))
        witness.ctl("add-log", "-origin", sweep.origin)
        witness.ctl("add-key", "-origin", sweep.origin, "-key", sweep.vkey)
        old, checked = 0, 0
        for size in (
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            13,
            16,
            17,
            31,
            32,
            33,
            63,
            64,
            65,
            100,
            127,
            128,
            129,
            1000,
            1024,
            1025,
            4097,
        ):
            sweep.grow(range(sweep.tree.size, size))
            signed = sweep.checkpoint(size)
            proof = sweep.tree.consistency_proof(old, size)
            answer = witness.add_checkpoint(add_checkpoint_body(old, proof, signed))
            if answer.status != 200:
                report.disagree(
                    f"consistency {old} -> {size}: litewitness answered {answer.status} {answer.body!r}"
                )
                break
            text = note.Note.parse(signed).text
            sig = note.parse_signature_lines(answer.body)[0]
            note.verify_cosignature(text, sig, name=WITNESS_NAME, public_key=witness.public_key)
            old, checked = size, checked + 1
        report.add(f"sweep 0 -> 4097 ({checked} proofs)", 200, "all accepted; every cosignature verified")
    return report


def find_binary(name: str, given: str | None) -> Path | None:
    if given:
        return Path(given) if Path(given).is_file() else None
    found = shutil.which(name)
    return Path(found) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--litewitness", default=os.environ.get("CASELINE_LITEWITNESS"))
    parser.add_argument("--witnessctl", default=os.environ.get("CASELINE_WITNESSCTL"))
    args = parser.parse_args(argv)
    lw = find_binary("litewitness", args.litewitness)
    ctl_given = args.witnessctl or (str(lw.parent / "witnessctl") if lw else None)
    ctl = find_binary("witnessctl", ctl_given)
    if lw is None or ctl is None:
        print("litewitness and witnessctl binaries are needed (--litewitness, --witnessctl)", file=sys.stderr)
        return 1
    try:
        report = run(lw, ctl)
    except InteropError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    if report.disagreements:
        print(f"FAILED: {len(report.disagreements)} disagreement(s) with litewitness", file=sys.stderr)
        return 1
    print(f"interop: {len(report.steps)} add-checkpoint exchanges agreed with litewitness")
    return 0


if __name__ == "__main__":
    sys.exit(main())
