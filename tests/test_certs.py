"""Certificates, revocation lists and pins: every way a device identity can be faked."""

from __future__ import annotations

import pytest
from caseline.crypto import primitives as P
from caseline.crypto.certs import TrustStore, issue_device_cert, issue_revocation_list
from caseline.crypto.keys import (
    AgencyRootKey,
    DeviceKeys,
    device_id_for,
    fingerprint,
    normalize_fingerprint,
)
from caseline.schemas.errors import (
    BadSignatureError,
    DecryptionError,
    ExpiredError,
    MalformedError,
    RevokedError,
    UntrustedError,
)
from caseline.schemas.wire import DeviceCert, Revocation, decode_signed, encode_signed

from tests.support.world import YEAR, World


@pytest.fixture
def world() -> World:
    w = World("certs")
    w.agency("ke-kra")
    w.agency("tz-tra")
    return w


def test_valid_certificate_verifies(world: World) -> None:
    dev = world.device("ke-kra", "alice")
    vc = world.trust().verify_cert(dev.cert, at=world.now)
    assert vc.cert.user_id == "alice"
    assert vc.device_id == dev.id == device_id_for(dev.keys.sign_public)


def test_certificate_signed_by_another_agency_root_is_rejected(world: World) -> None:
    """A root signing for an agency it does not own: the pinned key for that agency fails."""
    dev = world.device("ke-kra", "alice")
    tbs, _ = decode_signed(dev.cert)
    forged = encode_signed(tbs, world.roots["tz-tra"].sign("device-cert", tbs))
    with pytest.raises(BadSignatureError):
        world.trust().verify_cert(forged, at=world.now)


def test_certificate_from_unpinned_agency_is_untrusted(world: World) -> None:
    rogue = AgencyRootKey("xx-rogue", world.rng(32))
    keys = DeviceKeys.generate(world.rng)
    cert = issue_device_cert(
        rogue,
        user_id="mallory",
        role="officer",
        sign_key=keys.sign_public,
        kem_key=keys.kem_public,
        not_before=world.now,
        not_after=world.now + YEAR,
        serial=1,
    )
    with pytest.raises(UntrustedError):
        world.trust().verify_cert(cert, at=world.now)


def test_root_impersonation_under_a_pinned_name_is_rejected(world: World) -> None:
    """A rogue root claiming a pinned agency's name signs with the wrong key."""
    rogue = AgencyRootKey("ke-kra", world.rng(32))
    keys = DeviceKeys.generate(world.rng)
    cert = issue_device_cert(
        rogue,
        user_id="alice",
        role="officer",
        sign_key=keys.sign_public,
        kem_key=keys.kem_public,
        not_before=world.now,
        not_after=world.now + YEAR,
        serial=1,
    )
    with pytest.raises(BadSignatureError):
        world.trust().verify_cert(cert, at=world.now)


@pytest.mark.parametrize("offset", [-2 * 3600 * 1000, YEAR + 1])
def test_certificate_outside_validity_is_expired(world: World, offset: int) -> None:
    dev = world.device("ke-kra", "alice")
    with pytest.raises(ExpiredError):
        world.trust().verify_cert(dev.cert, at=world.now + offset)


def test_revoked_device_is_rejected_from_revocation_time(world: World) -> None:
    dev = world.device("ke-kra", "alice")
    world.revoke(dev, at=world.now + 10)
    trust = world.trust()
    trust.verify_cert(dev.cert, at=world.now)  # before revocation: still valid
    with pytest.raises(RevokedError):
        trust.verify_cert(dev.cert, at=world.now + 10)


def test_revocation_list_cannot_roll_back_or_unrevoke(world: World) -> None:
    a = world.device("ke-kra", "alice")
    b = world.device("ke-kra", "bob")
    first = world.revoke(a)
    second = world.revoke(b)
    trust = world.trust()
    with pytest.raises(RevokedError):
        trust.add_revocation_list(first)  # older number: a rollback
    root = world.roots["ke-kra"]
    unrevoke = issue_revocation_list(root, number=99, issued_at=world.now, entries=[])
    with pytest.raises(RevokedError):
        trust.add_revocation_list(unrevoke)
    assert trust.revoked_at(DeviceCert.decode(decode_signed(a.cert)[0])) is not None
    trust.add_revocation_list(second)  # the same list again is harmless
    for shift, accepted in ((+1, False), (-1, True)):  # later would revive a window; earlier is stricter
        entries = [
            Revocation(device_id=d.id, serial=0, revoked_at=world.now + shift, reason="device-lost")
            for d in (a, b)
        ]
        moved = issue_revocation_list(root, number=100 + shift, issued_at=world.now, entries=entries)
        if accepted:
            trust.add_revocation_list(moved)
            assert trust.revoked_at(DeviceCert.decode(decode_signed(a.cert)[0])) == world.now - 1
        else:
            with pytest.raises(RevokedError):
                trust.add_revocation_list(moved)


def test_revocation_list_signed_by_wrong_root_is_rejected(world: World) -> None:
    crl = issue_revocation_list(world.roots["tz-tra"], number=1, issued_at=world.now, entries=[])
    tbs, sig = decode_signed(crl)
    relabelled = tbs.replace(b"tz-tra", b"ke-kra")
    with pytest.raises(BadSignatureError):
        world.trust().add_revocation_list(encode_signed(relabelled, sig))


def test_certificate_signature_is_not_a_revocation_signature(world: World) -> None:
    """Domain separation: the same root key signs both, under different labels."""
    root = world.roots["ke-kra"]
    crl = issue_revocation_list(root, number=1, issued_at=world.now, entries=[])
    tbs, _ = decode_signed(crl)
    cross = encode_signed(tbs, root.sign("device-cert", tbs))
    with pytest.raises(BadSignatureError):
        world.trust().add_revocation_list(cross)


def _sign_raw(root: AgencyRootKey, cert: DeviceCert) -> bytes:
    tbs = cert.encode()
    return encode_signed(tbs, root.sign("device-cert", tbs))


def test_device_id_not_bound_to_key_is_rejected(world: World) -> None:
    """The CVE-2022-39250 class: a device id naming someone else's key."""
    keys = DeviceKeys.generate(world.rng)
    other = DeviceKeys.generate(world.rng)
    cert = DeviceCert(
        agency_id="ke-kra",
        user_id="alice",
        device_id=other.device_id,
        role="officer",
        scopes=(),
        sign_key=keys.sign_public,
        kem_key=keys.kem_public,
        not_before=world.now,
        not_after=world.now + YEAR,
        serial=7,
    )
    with pytest.raises(MalformedError):
        world.trust().verify_cert(_sign_raw(world.roots["ke-kra"], cert), at=world.now)


def test_low_order_x25519_half_of_kem_key_is_rejected(world: World) -> None:
    keys = DeviceKeys.generate(world.rng)
    bad_kem = keys.kem_public[: P.MLKEM768_PUBLIC_SIZE] + bytes(32)  # the zero point: low order
    cert = DeviceCert(
        agency_id="ke-kra",
        user_id="alice",
        device_id=keys.device_id,
        role="officer",
        scopes=(),
        sign_key=keys.sign_public,
        kem_key=bad_kem,
        not_before=world.now,
        not_after=world.now + YEAR,
        serial=8,
    )
    with pytest.raises(DecryptionError):
        world.trust().verify_cert(_sign_raw(world.roots["ke-kra"], cert), at=world.now)


def test_scopes_only_on_bots(world: World) -> None:
    keys = DeviceKeys.generate(world.rng)
    with pytest.raises(MalformedError):
        issue_device_cert(
            world.roots["ke-kra"],
            user_id="alice",
            role="officer",
            scopes=["alert"],
            sign_key=keys.sign_public,
            kem_key=keys.kem_public,
            not_before=world.now,
            not_after=world.now + YEAR,
            serial=9,
        )


def test_fingerprint_is_30_digits_and_binds_the_agency(world: World) -> None:
    root = world.roots["ke-kra"]
    fp = root.fingerprint
    assert len(fp.replace(" ", "")) == 30 and fp.replace(" ", "").isdigit()
    assert fingerprint("tz-tra", root.public_key) != fp
    assert normalize_fingerprint(fp.replace(" ", "-")) == fp
    with pytest.raises(ValueError, match="30 digits"):
        normalize_fingerprint(fp[:-1])


def test_secret_keys_do_not_print(world: World) -> None:
    root = world.roots["ke-kra"]
    keys = DeviceKeys.generate(world.rng)
    for obj, secret in (
        (root, root.seed),
        (keys, keys.kem_seed),
        (keys.signing, keys.signing.seed),
    ):
        assert secret.hex() not in repr(obj)
        assert secret.hex()[:16] not in repr(obj)


def test_trust_store_pin_and_unpin(world: World) -> None:
    store = TrustStore()
    dev = world.device("ke-kra", "alice")
    with pytest.raises(UntrustedError):
        store.verify_cert(dev.cert, at=world.now)
    store.pin("ke-kra", world.roots["ke-kra"].public_key)
    store.verify_cert(dev.cert, at=world.now)
    store.unpin("ke-kra")
    with pytest.raises(UntrustedError):
        store.verify_cert(dev.cert, at=world.now)


def test_revocation_entry_shape(world: World) -> None:
    with pytest.raises(MalformedError):
        Revocation(device_id=b"short", serial=1, revoked_at=1, reason="device-lost")


def test_an_agency_cannot_revoke_another_agencys_device(world: World) -> None:
    """A partner's revocation list naming our device id changes nothing for our device."""
    ours = world.device("ke-kra", "alice")
    crl = issue_revocation_list(
        world.roots["tz-tra"],
        number=1,
        issued_at=world.now,
        entries=[Revocation(device_id=ours.id, serial=0, revoked_at=world.now - 1, reason="key-compromise")],
    )
    trust = world.trust()
    trust.add_revocation_list(crl)
    trust.verify_cert(ours.cert, at=world.now)


def test_remembered_certificates_are_rechecked_when_pins_change(world: World) -> None:
    """The store remembers checked certificates, but only under the pins they were checked with."""
    dev = world.device("ke-kra", "alice")
    store = world.trust()
    store.verify_cert(dev.cert, at=world.now)  # now remembered
    store.pin("ke-kra", AgencyRootKey("ke-kra", world.rng(32)).public_key)  # a different root
    with pytest.raises(BadSignatureError):
        store.verify_cert(dev.cert, at=world.now)
    store.pin("ke-kra", world.roots["ke-kra"].public_key)
    store.verify_cert(dev.cert, at=world.now)
    with pytest.raises(ExpiredError):  # validity is checked on every use
        store.verify_cert(dev.cert, at=world.now + 2 * YEAR)
