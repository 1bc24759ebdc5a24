"""Passwordless device login: sign the broker's one-time challenge.

The challenge names the broker's own key, the device and a fresh nonce, and
expires quickly.  A response made for one broker is useless at another (the
key differs), a response for one device is useless for another, and the broker
accepts each nonce once.  The device signs under its own label ``auth``, so no
other caseline signature can stand in for a login.

The nonce is the broker's business and opaque to devices: 16 random bytes and
a 16-byte HMAC-SHA256 tag over them and every other field of the challenge,
under a key only the broker holds (``nonce_key``).  The broker therefore keeps
no table of pending challenges (a flood of challenge requests fills nothing),
and it recognises its own challenges when they come back: a challenge it did
not issue, or whose ``issued_at`` or ``expires_at`` a device changed before
signing, fails the tag, so the expiry the broker issued is the one enforced.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.certs import MAX_SKEW_MS
from caseline.crypto.keys import DeviceKeys, Rng, SigningKey
from caseline.schemas.errors import ExpiredError, MalformedError, UntrustedError
from caseline.schemas.wire import AuthChallenge, DeviceCert, decode_signed, encode_signed

AUTH_LABEL: Final = "auth"
CHALLENGE_TTL_MS: Final = 60 * 1000
#: The nonce is ``random (16) || tag (16)``: 128 bits of each, well past guessing or colliding.
NONCE_RANDOM_SIZE: Final = 16
NONCE_TAG_SIZE: Final = 16
NONCE_KEY_SIZE: Final = 32
_TAG_LABEL: Final = "auth challenge"


def _tag(nonce_key: bytes, challenge: AuthChallenge, random: bytes) -> bytes:
    """The nonce's tag: every field but the nonce, and the nonce's random half, under ``nonce_key``."""
    return P.mac_labeled(
        nonce_key,
        _TAG_LABEL,
        challenge.server_key,
        challenge.device_id,
        b"%d" % challenge.issued_at,
        b"%d" % challenge.expires_at,
        random,
    )[:NONCE_TAG_SIZE]


def make_challenge(server: SigningKey, device_id: bytes, *, now: int, rng: Rng, nonce_key: bytes) -> bytes:
    """The exact challenge bytes the broker hands out; it remembers nothing (see the module docstring)."""
    random = rng(NONCE_RANDOM_SIZE)
    unsigned = AuthChallenge(
        server_key=server.public_key,
        device_id=device_id,
        nonce=bytes(NONCE_RANDOM_SIZE + NONCE_TAG_SIZE),
        issued_at=now,
        expires_at=now + CHALLENGE_TTL_MS,
    )
    return dataclasses.replace(unsigned, nonce=random + _tag(nonce_key, unsigned, random)).encode()


def check_issued(challenge: AuthChallenge, *, nonce_key: bytes) -> None:
    """Refuse a challenge this broker (this ``nonce_key``) did not issue exactly as it stands.

    One HMAC: cheap enough to run before the device lookup and the Ed25519
    verification, so forged or edited challenges cost the broker almost nothing.
    """
    random, tag = challenge.nonce[:NONCE_RANDOM_SIZE], challenge.nonce[NONCE_RANDOM_SIZE:]
    expected = _tag(nonce_key, challenge, random)
    if not P.constant_time_equal(tag, expected):
        raise UntrustedError("challenge was not issued by this broker, or was altered")


def answer_challenge(keys: DeviceKeys, challenge: bytes, *, server_key: bytes) -> bytes:
    """Sign a challenge after checking it is for this device and the expected broker."""
    parsed = AuthChallenge.decode(challenge)
    if parsed.device_id != keys.device_id or not P.constant_time_equal(parsed.server_key, server_key):
        raise MalformedError("challenge is not for this device and broker")
    return encode_signed(challenge, keys.sign(AUTH_LABEL, challenge))


def verify_response(response: bytes, *, server_key: bytes, cert: DeviceCert, now: int) -> AuthChallenge:
    """Check a signed response; the caller must also check ``check_issued`` and that the nonce is unused."""
    tbs, sig = decode_signed(response, max_size=512)
    challenge = AuthChallenge.decode(tbs)
    if not P.constant_time_equal(challenge.server_key, server_key):
        raise MalformedError("challenge was issued by another broker")
    if challenge.device_id != cert.device_id:
        raise MalformedError("challenge was issued to another device")
    P.verify_labeled(cert.sign_key, AUTH_LABEL, tbs, sig)
    if not challenge.issued_at - MAX_SKEW_MS <= now <= challenge.expires_at:
        raise ExpiredError("challenge has expired")
    return challenge
