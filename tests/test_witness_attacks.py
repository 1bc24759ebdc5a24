"""Attacks by a compromised broker operator, against real processes (issue 12).

Every test runs the real ``caseline-server`` and one real ``caseline-witness``
per agency on loopback (``tests.support.witnessed``), and drives members with
the real ``caseline`` CLI.  The attacker holds what an operator holds: the
broker's data directory and its key.  Each test names the product check that
makes the attack fail; each was run with that check disabled and went red
(see the comment on each test).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from caseline.crypto import merkle, tlog
from caseline.crypto.evidence import EVIDENCE_LABEL
from caseline.crypto.keys import SigningKey
from caseline.crypto.note import Note, log_origin
from caseline.schemas.wire import EntryLeaf, EvidenceBundle, decode_signed, encode_signed

from tests.support.witnessed import (
    ALARM_AFTER_MS,
    EXIT_SPLIT_VIEW,
    Member,
    WitnessedNetwork,
    WitnessProcess,
    alarm_proofs,
    build_template,
    copy_broker,
    running_copy,
    until_exit,
)

DAY_MS = 86_400_000
#: Slack on top of the 1 s bound for starting a CLI process and its first contact (2 cores).
SLACK_S = 15.0


async def post(member: Member, case: str, text: str) -> tuple[int, dict[str, object], str]:
    code, out, err = await member.run(
        "--json", "post", case, "--type", "status", "--field", "status=active", "--field", f"reason={text}"
    )
    return code, (json.loads(out) if code == 0 and out.strip() else {}), err


async def show(member: Member, case: str) -> tuple[int, dict[str, object], str]:
    code, out, err = await member.run("--json", "case", "show", case)
    return code, (json.loads(out) if code == 0 and out.strip() else {}), err


async def until_final(member: Member, case: str) -> dict[str, object]:
    """Poll ``case show`` until every entry is final (the witnesses cosigned), bounded."""
    deadline = time.monotonic() + 30
    while True:
        code, data, err = await show(member, case)
        assert code == 0, err
        witness = data["witness"]
        assert isinstance(witness, dict)
        if witness["witnessed"] and witness["pending"] == 0:
            return data
        assert time.monotonic() < deadline, f"entries stayed pending: {witness}"


def checkpoints_in(text: str, origin: str) -> set[tuple[int, str]]:
    """The distinct (size, root) checkpoints of ``origin`` quoted in an alarm's proof file."""
    found = re.findall(re.escape(origin) + r"\n(\d+)\n([A-Za-z0-9+/=]{44})\n", text)
    return {(int(size), root) for size, root in found}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> WitnessedNetwork:
    """One witnessed network built for the module (stopped); each test runs a copy of it."""
    return build_template(tmp_path_factory.mktemp("witnessed") / "template")


@contextlib.contextmanager
def broker_db(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """The broker's database as its operator can open it (autocommit), closed afterwards."""
    db = sqlite3.connect(data_dir / "broker.sqlite3", isolation_level=None)
    try:
        yield db
    finally:
        db.close()


# --------------------------------------------------------------------------- a. hidden update


async def test_an_update_hidden_as_purged_with_a_backdated_time_is_refused(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """The operator blanks a fresh update and serves it as ``purged`` with a receipt it signed
    366 days in the past: the member who never fetched it gets exit 3, not a silent gap.

    Check that stops it: ``CaseView._vouched_time`` (crypto/caselog.py) — in a witnessed
    case a purged entry is dated by the witnessed time of its receipt's checkpoint, which
    must carry the case's quorum; the broker's own leaf time counts for nothing.
    Mutation: ``_vouched_time`` returning ``r.time`` for every case → ``case show`` exits 0
    and the update is gone without a word (red).
    """
    async with running_copy(template, tmp_path / "net") as net:
        kra, tra = net.kra, net.tra
        code, _, err = await kra.run(
            "--json",
            "case",
            "create",
            "--title",
            "Relay only",
            "--member",
            "tz-tra:juma",
            "--retention-days",
            "0",
            "--witnessed",
            "--alarm-after",
            "1",
        )
        assert code == 0, err
        code, out, _ = await kra.run("--json", "case", "list")
        relay = next(c["case_id"] for c in json.loads(out) if c["title"] == "Relay only")
        for case in (net.case, relay):
            code, _, err = await post(kra, case, "seized at Namanga")
            assert code == 0, err
        await asyncio.gather(*(until_final(kra, case) for case in (net.case, relay)))

        # The honest purge of the relay-only case: what the broker's retention pass writes —
        # the update's receipt into a checkpoint the witnesses cosigned (PROTOCOL.md §7.4).
        async with await kra.open() as client:
            answer = await client.broker.log_witnessed(since=0, case_id=bytes.fromhex(relay))
        assert answer is not None and answer.leaf
        honest = tlog.make_receipt(
            EntryLeaf.decode(answer.leaf),
            index=answer.index,
            checkpoint=answer.witnessed,
            proof=answer.inclusion,
        )
        assert EntryLeaf.decode(answer.leaf).seq == 1

        await net.stop_broker()
        key = SigningKey((net.broker_dir / "server.key").read_bytes())
        with broker_db(net.broker_dir) as db:
            (stored,) = db.execute(
                "SELECT receipt FROM entries WHERE case_id = ? AND seq = 1", (bytes.fromhex(net.case),)
            ).fetchone()
            real = tlog.receipt_leaf(bytes(stored))
            # The forgery: the same entry, dated 366 days ago, in a checkpoint the broker just
            # signed over a tree of its own making (one leaf); it verifies under the broker key.
            leaf = dataclasses.replace(real, time=real.time - 366 * DAY_MS)
            note = tlog.sign_checkpoint(key, size=1, root=merkle.leaf_hash(leaf.encode()))
            forged = tlog.make_receipt(leaf, index=0, checkpoint=note, proof=[])
            for case, receipt in ((net.case, forged), (relay, honest)):
                db.execute(
                    "UPDATE entries SET kind = 'purged', body = X'', receipt = ?"
                    " WHERE case_id = ? AND seq = 1",
                    (receipt, bytes.fromhex(case)),
                )
        await net.start_broker()

        code, data, err = await show(tra, relay)  # the honest purge: accepted, shown as purged
        assert code == 0, err
        events = data["events"]
        assert isinstance(events, list)
        assert any(e.get("kind") == "purged" for e in events), events

        code, _, err = await show(tra, net.case)  # the hidden update: refused
        assert code == EXIT_SPLIT_VIEW, err
        assert "purged" in err and "witness" in err, err


# --------------------------------------------------------------------------- b. fork


async def test_two_brokers_from_one_copy_each_member_raises_the_alarm(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """Two broker processes from one data directory and key, one member on each: both
    members raise the split-view alarm (exit 3) within the bound, and keep the proof.

    Checks that stop it (client/watch.py ``LogWatching``): a member asks its own agency's
    witness for an equivocation (§7.8 case 4) — each witness is shown two roots for one
    size by the two brokers' pushers — and an entry pending past ``alarm_after`` is an
    alarm (case 5) on a branch a witness refused.  Mutation: ``_ask_own_witnesses``
    returning at once → the member whose branch both witnesses happened to cosign first
    sees no alarm (red); which member that is depends on the race, so the pending bound
    alone does not cover the fork.
    """
    async with running_copy(template, tmp_path / "net") as net:
        kra, tra = net.kra, net.tra
        await net.stop_broker()
        second = copy_broker(net.broker_dir, tmp_path / "broker-copy")
        await net.start_broker()
        other = await net.start_broker(second)
        await net.point(tra, other)

        posted_at = time.monotonic()
        results = await asyncio.gather(
            post(kra, net.case, "KRA branch: container MSKU1234565 released"),
            post(tra, net.case, "TRA branch: container MSKU1234565 held"),
        )
        for code, _, err in results:
            assert code in (0, EXIT_SPLIT_VIEW), err

        async def alarm(member: Member) -> float:
            code, _, err = await until_exit(
                lambda: member.run("case", "show", net.case), EXIT_SPLIT_VIEW, within=SLACK_S
            )
            assert code == EXIT_SPLIT_VIEW, f"{member.agency_id} saw no alarm: {err}"
            assert "split-view" in err or "witness" in err, err
            return time.monotonic() - posted_at

        took = await asyncio.gather(alarm(kra), alarm(tra))
        assert max(took) < ALARM_AFTER_MS / 1000 + SLACK_S

        # ``follow`` checks on a clock: it too stops with the alarm.
        follows = await asyncio.gather(
            *(m.run("follow", net.case, "--for", str(SLACK_S)) for m in (kra, tra))
        )
        for code, _, err in follows:
            assert code == EXIT_SPLIT_VIEW, err

        origin = log_origin(SigningKey((net.broker_dir / "server.key").read_bytes()).public_key)
        for member in (kra, tra):
            proofs = alarm_proofs(member)
            assert proofs, f"{member.agency_id} kept no proof"
            assert any(len(checkpoints_in(p, origin)) >= 2 for p in proofs), proofs


# --------------------------------------------------------------------------- c. restored backup


async def test_a_restored_backup_is_an_alarm_on_every_commands_first_contact(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """The documented backup, more posts, then the old copy restored: every command's first
    contact exits 3, not only ``verify``.

    Checks that stop it (crypto/tlog.py ``LogWatch.observe``, run by
    ``LogWatching.check_log`` on every command's first contact): the newest checkpoint
    must extend the largest one held (``check_consistent``), and the witnessed one may
    not go back (the size test after it).  They back each other up: with either one
    removed the test stays green; with both removed ``case list`` exits 0 (red).  The
    per-case rollback test in ``Ledger.next_page`` (client/core.py) also catches ``case
    show``/``post``/``verify`` first; removing it alone leaves the test green.
    """
    async with running_copy(template, tmp_path / "net") as net:
        kra, tra = net.kra, net.tra
        backup = tmp_path / "backup.sqlite3"
        from tests.support.process import cli as server_cli

        server_cli(net.broker_dir, "backup", str(backup))
        for i in range(2):
            code, _, err = await post(kra, net.case, f"after the backup #{i}")
            assert code == 0, err
        await asyncio.gather(until_final(kra, net.case), until_final(tra, net.case))

        await net.stop_broker()
        for suffix in ("", "-wal", "-shm"):
            (net.broker_dir / f"broker.sqlite3{suffix}").unlink(missing_ok=True)
        (net.broker_dir / "broker.sqlite3").write_bytes(backup.read_bytes())
        await net.start_broker()

        commands: list[tuple[str, ...]] = [
            ("case", "list"),
            ("case", "show", net.case),
            ("post", net.case, "--type", "status", "--field", "status=active", "--field", "reason=x"),
            ("follow", net.case, "--for", "10"),
            ("verify", net.case),
        ]
        # Every command of one member, and the other member's ``case show`` alone: its case log
        # sees the rollback first, and the alarm must still come with the proof kept.
        runs = [(kra, c) for c in commands] + [(tra, commands[1])]
        results = await asyncio.gather(*(member.run(*c) for member, c in runs))
        for (member, command), (code, _, err) in zip(runs, results, strict=True):
            assert code == EXIT_SPLIT_VIEW, f"{member.agency_id}: {' '.join(command)} → {code}: {err}"
            assert "split-view alarm" in err, err
        for member in (kra, tra):
            assert alarm_proofs(member)


# --------------------------------------------------------------------------- d. withheld cosignatures


async def test_a_broker_without_cosignatures_shows_pending_then_the_alarm(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """No cosignature reaches the members (the witnesses are unreachable): new entries are
    *pending witness*, and once the 1 s bound has passed every command exits 3.

    Check that stops it: the pending bound in ``LogWatching._check_log`` (client/watch.py,
    §7.8 case 5).  Mutation: that ``raise SplitViewError`` removed → ``case show`` keeps
    exiting 0 with the entry pending forever (red).
    """
    async with running_copy(template, tmp_path / "net") as net:
        kra, tra = net.kra, net.tra
        await until_final(kra, net.case)
        for w in net.witnesses.values():
            await w.stop()

        started = time.monotonic()
        code, posted, err = await post(kra, net.case, "no witness will see this")
        assert code == 0, err
        assert posted.get("final") is False, posted

        async def pending_then_alarm(member: Member) -> None:
            seen_pending = False
            deadline = time.monotonic() + SLACK_S
            while True:
                code, data, err = await show(member, net.case)
                if code == EXIT_SPLIT_VIEW:
                    break
                assert code == 0, err
                witness = data["witness"]
                assert isinstance(witness, dict)
                assert witness["pending"] >= 1, witness
                seen_pending = True
                assert time.monotonic() < deadline, "no alarm after the bound"
            assert "waited" in err and "witnesses" in err, err
            assert seen_pending or member is kra  # kra saw it pending when it posted
            assert time.monotonic() - started >= ALARM_AFTER_MS / 1000
            assert alarm_proofs(member)

        await asyncio.gather(pending_then_alarm(kra), pending_then_alarm(tra))


# --------------------------------------------------------------------------- e. witness restart


async def add_checkpoint(
    witness: WitnessProcess, old: int, proof: list[bytes], note: bytes
) -> tuple[int, bytes]:
    body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + note
    async with (
        aiohttp.ClientSession() as session,
        session.post(witness.url + "/add-checkpoint", data=body) as r,
    ):
        return r.status, await r.read()


async def test_a_restarted_witness_never_cosigns_a_checkpoint_inconsistent_with_its_last(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """A witness restarted on its own data keeps its word: the operator, holding the broker's
    key, offers it a forked tree (and a smaller one) and gets no cosignature.

    Check that stops it: ``witness.core.decide`` (old size must be the stored one, the
    consistency proof must verify from the stored root) over state written before the
    answer (witness/store.py).  Mutation: the consistency check in ``decide`` skipped →
    the forked checkpoint is cosigned with 200 (red).
    """
    async with running_copy(template, tmp_path / "net") as net:
        witness = net.witnesses["tz-tra"]
        key = SigningKey((net.broker_dir / "server.key").read_bytes())
        origin = log_origin(key.public_key)
        for i in range(2):
            code, _, err = await post(net.kra, net.case, f"before the restart #{i}")
            assert code == 0, err
        await until_final(net.kra, net.case)

        await witness.stop()
        await witness.start()  # on its own data directory

        monitor = f"{witness.url}/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint"
        async with aiohttp.ClientSession() as session, session.get(monitor) as r:
            assert r.status == 200
            cosigned = Note.parse(await r.read())
        size = int(cosigned.text.split(b"\n")[1])
        with broker_db(net.broker_dir) as db:  # the log's leaves, as the operator reads them
            leaves = [
                bytes(r[0]) for r in db.execute("SELECT leaf FROM log_leaves ORDER BY idx LIMIT ?", (size,))
            ]
        honest = merkle.Tree()
        for leaf in leaves:
            honest.append(merkle.leaf_hash(leaf))
        assert honest.root(size) == base64.b64decode(cosigned.text.split(b"\n")[2])
        assert size >= 2

        # A fork: the last cosigned leaf replaced, and the tree grown past the witness's size.
        forked = merkle.Tree()
        for leaf in leaves[:-1]:
            forked.append(merkle.leaf_hash(leaf))
        for i in range(3):
            forked.append(merkle.leaf_hash(b"forked entry %d" % i))
        new = forked.size
        note = tlog.sign_checkpoint(key, size=new, root=forked.root(new))
        status, body = await add_checkpoint(witness, size, forked.consistency_proof(size, new), note)
        assert status == 422, body
        # The same tree restarting from scratch, and a smaller tree: refused too.
        status, body = await add_checkpoint(witness, 0, [], note)
        assert (status, body) == (409, b"%d\n" % size)
        small = tlog.sign_checkpoint(key, size=size - 1, root=honest.root(size - 1))
        status, _ = await add_checkpoint(witness, size, [], small)
        assert status == 400
        # Its monitoring view still names the checkpoint it cosigned before the restart.
        async with aiohttp.ClientSession() as session, session.get(monitor) as r:
            assert Note.parse(await r.read()).text == cosigned.text

        # A fork at the very size it cosigned is an equivocation it keeps, and the member of
        # its agency hears of it on the next command (§7.8 case 4).
        twin = merkle.Tree()
        for leaf in leaves[:-1]:
            twin.append(merkle.leaf_hash(leaf))
        twin.append(merkle.leaf_hash(b"the other entry"))
        status, _ = await add_checkpoint(
            witness, size, [], tlog.sign_checkpoint(key, size=size, root=twin.root(size))
        )
        assert status in (409, 422)
        code, _, err = await net.tra.run("case", "show", net.case)
        assert code == EXIT_SPLIT_VIEW, err

        # A witness whose state is lost refuses to start: it must be retired.
        await witness.stop()
        (witness.data_dir / "state.sqlite3").unlink()
        with pytest.raises(RuntimeError, match="exited"):
            await witness.start()


# --------------------------------------------------------------------------- f. outsider as exporter


async def test_a_bundle_re_signed_by_a_device_outside_the_case_is_refused(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """A genuine KRA device that was never in the case re-signs a real bundle as its exporter
    (and adds its own valid certificate): ``evidence verify`` exits 3.

    Check that stops it: ``verify_evidence`` (crypto/evidence.py) requires the exporter to
    be a member of the case at the bundle's last entry.  Mutation: that membership test
    removed → the outsider's bundle verifies (exit 0) (red).
    """
    async with running_copy(template, tmp_path / "net") as net:
        kra = net.kra
        code, _, err = await post(kra, net.case, "evidence follows")
        assert code == 0, err
        await until_final(kra, net.case)
        bundle = tmp_path / "case.evidence"
        code, _, err = await kra.run("evidence", "export", net.case, "-o", str(bundle))
        assert code == 0, err
        admins = [await net.admin(a) for a in ("ke-kra", "tz-tra")]
        pins = [a for admin in admins for a in ("--pin", f"{admin.agency_id}={admin.fingerprint}")]
        code, out, err = await kra.run("evidence", "verify", str(bundle), *pins)
        assert code == 0, err
        assert "WITNESSED" in out

        _, outsider = await net.enrol("ke-kra", "mallory")
        try:
            tbs, _ = decode_signed(bundle.read_bytes(), max_size=1 << 24)
            original = EvidenceBundle.decode(tbs)
            forged = dataclasses.replace(
                original, exporter=outsider.keys.device_id, certs=(*original.certs, outsider.cert)
            ).encode()
            re_signed = tmp_path / "outsider.evidence"
            re_signed.write_bytes(encode_signed(forged, outsider.keys.sign(EVIDENCE_LABEL, forged)))
        finally:
            await outsider.close()
        code, _, err = await kra.run("evidence", "verify", str(re_signed), *pins)
        assert code == EXIT_SPLIT_VIEW, err
        assert "not a member" in err, err


# --------------------------------------------------------------------------- g. audit rows


async def test_audit_rows_deleted_or_rewritten_are_found_by_audit_verify(
    template: WitnessedNetwork, tmp_path: Path
) -> None:
    """The operator deletes the newest audit row, or rewrites row 0 and recomputes the whole
    hash chain: ``caseline-server audit verify`` fails either way, because every audit row
    is also a leaf of the broker log whose checkpoints the witnesses cosigned.

    Check that stops it: ``core_log.check_audit_log`` (server, via ``audit verify``) — each
    row against its leaf, the leaves against the newest checkpoint.  Mutation: the
    row-against-leaf comparison removed → the rewritten chain reads "intact" (red).
    """
    from caseline.server.sqlite_store import audit_hash

    from tests.support.process import cli as server_cli

    async with running_copy(template, tmp_path / "net") as net:
        code, _, err = await post(net.kra, net.case, "an audited day")
        assert code == 0, err
        await until_final(net.kra, net.case)
        await net.stop_broker()
    assert "intact" in server_cli(net.broker_dir, "audit", "verify")

    def audit_verify(data_dir: Path) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data_dir), "audit", "verify"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    deleted = copy_broker(net.broker_dir, tmp_path / "deleted")
    with broker_db(deleted) as db:
        db.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    code, out = audit_verify(deleted)
    assert code != 0 and "BROKEN" in out, out

    rewritten = copy_broker(net.broker_dir, tmp_path / "rewritten")
    with broker_db(rewritten) as db:
        prev = bytes(32)
        rows = db.execute("SELECT seq, time, event, detail FROM audit ORDER BY seq").fetchall()
        for seq, at, event, original in rows:
            detail = "agency=innocent" if seq == 0 else original
            digest = audit_hash(prev, seq, at, event, detail)
            db.execute(
                "UPDATE audit SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (detail, prev, digest, seq),
            )
            prev = digest
    code, out = audit_verify(rewritten)
    assert code != 0 and "BROKEN" in out, out
