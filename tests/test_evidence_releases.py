"""Evidence that respects releases (PROTOCOL.md §6.7, §8 step 9): the exporter and the offline verifier.

Each case runs on a real broker on loopback.  The honest exporter is a real
``Client``; the *modified* exporter builds its bundle with
``crypto.evidence.export_evidence`` itself, skipping its client's check, and
the thing under test is then the unmodified offline verifier, which holds
nothing but the agencies' pins.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from caseline.client.client import Client, verify_bundle
from caseline.crypto.evidence import export_evidence
from caseline.schemas.errors import EXIT_UNTRUSTED, EXIT_USAGE, NotAllowedError, NotPermittedError

from tests.support.agencies import PARTNERS, Network
from tests.support.clirun import cli, cli_home
from tests.support.marks import CLEAR, modified

H1: dict[str, Any] = {"handling": "H1", "tlp": "AMBER"}
H2: dict[str, Any] = {"handling": "H2", "tlp": "AMBER"}
RED: dict[str, Any] = {"handling": "H0", "tlp": "RED"}


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    return (*PARTNERS, ("ug-ura", "Uganda Revenue Authority", "UG"))


def pins(net: Network) -> dict[str, str]:
    return {agency: admin.fingerprint for agency, admin in net.admins.items()}


async def forced_bundle(client: Client, case_id: bytes, seqs: Iterable[int]) -> bytes:
    """A modified exporter: the bundle of ``seqs`` built directly, its client's release check skipped."""
    await client.sync(case_id)
    view = await client.view(case_id)
    stored = {e.seq: e for e in await client.store.entries(case_id)}
    return export_evidence(
        view,
        exporter=client.keys,
        envelopes={seq: stored[seq].body for seq in seqs},
        receipt=stored[view.count - 1].receipt,
        now=client.clock(),
    )


async def a_case(net: Network) -> tuple[Client, Client, bytes]:
    """KRA's alice and TRA's juma in an H0/CLEAR case: only what is marked higher needs a release."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")], handling="H0", tlp="CLEAR")
    return alice, juma, case_id


async def test_h1_exported_as_evidence_without_a_release_fails_verification(net: Network) -> None:
    alice, juma, case_id = await a_case(net)
    own = await alice.post_note(case_id, "KRA's own H1 note", markings=H1)
    theirs = await juma.post_note(case_id, "TRA's H1 note", markings=H1)
    plain = await juma.post_note(case_id, "TRA's H0 note", markings=CLEAR)
    await alice.sync(case_id)

    # The honest exporter withholds it by default, naming why and how to ask, and refuses it by hand.
    plan = await alice.evidence_plan(case_id)
    assert [w.seq for w in plan.withheld] == [theirs.seq]
    assert "H1/TLP:AMBER by tz-tra:juma" in plan.withheld[0].text
    assert "caseline release-request" in plan.withheld[0].text and "--for evidence" in plan.withheld[0].text
    with pytest.raises(NotPermittedError, match=f"entry {theirs.seq} may not be disclosed as evidence"):
        await alice.export_evidence(case_id, [theirs.seq])
    # Own-agency content needs no release, whatever its markings; H0 needs none from anyone.
    report = verify_bundle(await alice.export_evidence(case_id), pins(net))
    assert [r.seq for r in report.records] == [own.seq, plain.seq] and report.releases == ()

    forced = await forced_bundle(alice, case_id, [own.seq, theirs.seq])
    with pytest.raises(NotAllowedError, match=rf"#{theirs.seq} .* by tz-tra:juma .*it is H1.*evidence"):
        verify_bundle(forced, pins(net))


async def test_a_release_for_one_purpose_is_not_used_for_another(net: Network) -> None:
    alice, juma, case_id = await a_case(net)
    note = await juma.post_note(case_id, "TRA's H1 note", markings=H1)
    spread = await juma.release(case_id, note.update_id, purpose="disseminate")
    await alice.sync(case_id)

    with pytest.raises(NotPermittedError, match="released it for no evidence"):
        await alice.export_evidence(case_id, [note.seq])
    forced = await forced_bundle(alice, case_id, [note.seq, spread.seq])
    with pytest.raises(NotAllowedError, match=rf"#{note.seq} .*released it for no evidence"):
        verify_bundle(forced, pins(net))

    # Released for evidence, it goes in, and the release with it, unasked.
    court = await juma.release(case_id, note.update_id, purpose="evidence", note="for CR 114/2026")
    await alice.sync(case_id)
    plan = await alice.evidence_plan(case_id, [note.seq])
    assert plan.disclose == (note.seq, court.seq) and plan.releases == (court.seq,)
    report = verify_bundle(await alice.export_evidence(case_id, [note.seq]), pins(net))
    assert [(u.seq, u.release_seq, u.purpose) for u in report.releases] == [(note.seq, court.seq, "evidence")]
    assert report.releases[0].releaser.user_id == "juma"


async def test_red_exported_without_a_release_fails_verification(net: Network) -> None:
    alice, juma, case_id = await a_case(net)
    red = await juma.post_note(case_id, "TLP:RED from TRA", markings=RED)
    await alice.sync(case_id)
    assert [w.seq for w in (await alice.evidence_plan(case_id)).withheld] == [red.seq]
    forced = await forced_bundle(alice, case_id, [red.seq])
    with pytest.raises(NotAllowedError, match="it is TLP:RED"):
        verify_bundle(forced, pins(net))

    await juma.release(case_id, red.update_id, purpose="disseminate")
    await alice.sync(case_id)
    report = verify_bundle(await alice.export_evidence(case_id, [red.seq]), pins(net))
    assert [u.purpose for u in report.releases] == ["disseminate"]


async def test_a_release_by_another_agency_or_a_plain_officer_does_not_count(net: Network) -> None:
    alice, juma, case_id = await a_case(net)
    kra_supervisor = await net.device("ke-kra", "juma", role="supervisor")  # named like the author
    tra_officer = await net.device("tz-tra", "neema")
    tra_supervisor = await net.device("tz-tra", "mkuu", role="supervisor")
    await alice.add_members(
        case_id, [("ke-kra", "juma", "member"), ("tz-tra", "neema", "member"), ("tz-tra", "mkuu", "member")]
    )
    note = await juma.post_note(case_id, "TRA's H2 note", markings=H2)
    forged = []
    for who in (kra_supervisor, tra_officer):
        await who.sync(case_id)
        forged.append(await modified(who).release(case_id, note.update_id, purpose="evidence"))
    await alice.sync(case_id)

    withheld = (await alice.evidence_plan(case_id)).withheld
    assert [w.seq for w in withheld] == [note.seq, *(f.seq for f in forged)]
    assert all("marking violation (release-forbidden)" in w.reason for w in withheld[1:])
    with pytest.raises(NotPermittedError, match=r"marking violation \(release-forbidden\), which is never"):
        await alice.export_evidence(case_id, [forged[0].seq])
    with pytest.raises(NotPermittedError, match=f"entry {note.seq} may not be disclosed"):
        await alice.export_evidence(case_id, [note.seq])
    forced = await forced_bundle(alice, case_id, [note.seq, *(f.seq for f in forged)])
    with pytest.raises(NotAllowedError, match=rf"#{note.seq} .*it is H2"):
        verify_bundle(forced, pins(net))

    # TRA's supervisor speaks for TRA: that release counts, and the bundle verifies.
    await tra_supervisor.sync(case_id)
    real = await tra_supervisor.release(case_id, note.update_id, purpose="evidence")
    await alice.sync(case_id)
    report = verify_bundle(await alice.export_evidence(case_id, [note.seq]), pins(net))
    assert [(u.release_seq, u.releaser.user_id) for u in report.releases] == [(real.seq, "mkuu")]


async def test_the_downgrade_a_disclosed_reply_relies_on_is_disclosed_with_it(net: Network) -> None:
    """Without the downgrade, the verifier would hold URA's H0 reply to TRA's H2 note as a violation."""
    alice, juma, case_id = await a_case(net)
    kato = await net.device("ug-ura", "kato")
    await alice.add_members(case_id, [("ug-ura", "kato", "member")])
    note = await juma.post_note(case_id, "TRA's H2 note", markings=H2)
    down = await juma.release(
        case_id, note.update_id, purpose="downgrade", to={"handling": "H0", "tlp": "CLEAR"}
    )
    court = await juma.release(case_id, note.update_id, purpose="evidence")
    await kato.sync(case_id)
    reply = await kato.post_reply(
        case_id, in_reply_to=note.update_id, text="seen at Mutukula", markings=CLEAR
    )
    await alice.sync(case_id)

    plan = await alice.evidence_plan(case_id, [note.seq, reply.seq])
    assert plan.releases == (down.seq, court.seq)
    report = verify_bundle(await alice.export_evidence(case_id, [note.seq, reply.seq]), pins(net))
    assert [r.seq for r in report.records] == [note.seq, down.seq, court.seq, reply.seq]


async def test_a_release_marked_like_its_case_goes_with_what_it_releases(net: Network) -> None:
    """In an H2 case a release is H2 too; a court must still see the permission an exhibit relies on."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    note = await juma.post_note(case_id, "TRA's note, H2 like the case")
    court = await juma.release(case_id, note.update_id, purpose="evidence")
    other = await juma.post_note(case_id, "TRA's second note, not released")
    await alice.sync(case_id)
    plan = await alice.evidence_plan(case_id)
    assert [w.seq for w in plan.withheld] == [other.seq]
    report = verify_bundle(await alice.export_evidence(case_id), pins(net))
    assert [r.seq for r in report.records] == [note.seq, court.seq]
    # The release of an update left out is not disclosed on its own: it is H2 like the rest.
    orphan = await juma.release(case_id, other.update_id, purpose="disseminate", recipients=["ug-ura"])
    await alice.sync(case_id)
    assert [w.seq for w in (await alice.evidence_plan(case_id)).withheld] == [other.seq, orphan.seq]
    forced = await forced_bundle(alice, case_id, [orphan.seq])
    with pytest.raises(NotAllowedError, match=rf"#{orphan.seq} .*it is H2"):
        verify_bundle(forced, pins(net))


async def test_the_cli_lists_what_it_withheld_and_verify_names_the_release(
    net: Network, tmp_path: Any
) -> None:
    alice, juma, case_id = await a_case(net)
    note = await juma.post_note(case_id, "TRA's H1 note", markings=H1)
    await alice.sync(case_id)
    home, profile = cli_home(alice)
    case = case_id.hex()

    code, out, err = await cli(
        home, "--profile", profile, "evidence", "export", case, "-o", str(tmp_path / "a")
    )
    assert code == 0, err
    assert f"#{note.seq} withheld: H1/TLP:AMBER by tz-tra:juma" in out
    code, out, err = await cli(
        home,
        "--profile",
        profile,
        "evidence",
        "export",
        case,
        "-o",
        str(tmp_path / "b"),
        "--seq",
        str(note.seq),
    )
    assert code == EXIT_USAGE and "may not be disclosed as evidence" in err and "Traceback" not in err
    assert "nothing was written" in err
    assert not (tmp_path / "b").exists()

    (tmp_path / "forced").write_bytes(await forced_bundle(alice, case_id, [note.seq]))
    pin_args = [arg for a, fp in sorted(pins(net).items()) for arg in ("--pin", f"{a}={fp}")]
    code, out, err = await cli(home, "evidence", "verify", str(tmp_path / "forced"), *pin_args)
    assert code == EXIT_UNTRUSTED and f"#{note.seq}" in err and "no evidence" in err, err

    court = await juma.release(case_id, note.update_id, purpose="evidence")
    code, out, err = await cli(
        home,
        "--profile",
        profile,
        "evidence",
        "export",
        case,
        "-o",
        str(tmp_path / "c"),
        "--seq",
        str(note.seq),
    )
    assert code == 0, err
    assert f"#{court.seq} disclosed too" in out
    code, out, err = await cli(home, "evidence", "verify", str(tmp_path / "c"), *pin_args)
    assert code == 0, err
    assert f"#{note.seq} disclosed under release #{court.seq} for evidence by tz-tra:juma" in out
