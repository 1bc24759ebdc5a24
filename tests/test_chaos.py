"""``make chaos``, short: the broker is killed under load and nothing acknowledged is lost.

The long run (20 kills and more) is ``make chaos``; this one runs in ``make test``
with a few kills, a backup under load, a full disk, and the fault switch that
proves the checker can fail; and uploads cut by kills and network cuts.
bench/chaos.py says what each count means.
"""

from __future__ import annotations

from pathlib import Path

from bench.chaos import chaos_run, parse

SMALL = ["--cases", "2", "--senders", "2", "--followers", "1", "--progress", "5", "--max-pause", "0.1"]
SMALL += ["--uploaders", "0"]  # the uploads' own test is the last one


async def test_kills_a_backup_and_a_full_disk_lose_nothing_acknowledged(tmp_path: Path) -> None:
    tally = await chaos_run(parse([*SMALL, "--kills", "4", "--seed", "7"]), tmp_path)
    assert tally.ok(), tally
    assert tally.kills >= 4 and tally.retried > 0
    assert tally.sent == tally.acked == tally.stored_updates  # each once, none lost, none extra
    assert tally.refused_disk_full >= 3  # the full disk was a clean refusal, then it recovered
    assert tally.backup_cases_verified == 2 and tally.backup_missing == 0
    assert tally.delivered > 0 and tally.forked == tally.unverified == tally.redelivered == 0


async def test_the_checker_reports_losses_when_the_broker_acknowledges_before_committing(
    tmp_path: Path,
) -> None:
    tally = await chaos_run(
        parse([*SMALL, "--kills", "2", "--fault", "--no-backup", "--no-disk-full"]), tmp_path
    )
    assert tally.kills >= 1
    assert tally.lost > 0 and not tally.ok(), tally


async def test_uploads_cut_by_kills_and_network_cuts_lose_no_acknowledged_byte(tmp_path: Path) -> None:
    """Real clients post files through a proxy that cuts them; the broker is killed under them."""
    args = [*SMALL, "--kills", "3", "--seed", "11", "--no-backup", "--no-disk-full"]
    tally = await chaos_run(
        parse([*args, "--uploaders", "2", "--upload-size", "3MiB", "--part-size", "256KiB"]), tmp_path
    )
    assert tally.ok(), tally
    assert tally.network_cuts >= 3 and tally.upload_retries > 0  # the cuts and kills did interrupt posts
    assert tally.uploads_acked >= 2 and tally.attachments_verified == tally.uploads_acked
    assert tally.upload_bytes_lost == tally.attachments_failed == 0
