"""Passwordless device login: sign the broker's one-time challenge.

The challenge names the broker's own key, the device and a fresh nonce, and
expires quickly.  A response made for one broker is useless at another (the
key differs), a response for one device is useless for another, and the broker
accepts each nonce once.  The device signs under its own label ``auth``, so no
other caseline signature can stand in for a login.
"""

from __future__ import annotations

from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.certs import MAX_SKEW_MS
from caseline.crypto.keys import DeviceKeys, Rng, SigningKey
from caseline.schemas.errors import ExpiredError, MalformedError
from caseline.schemas.wire import AuthChallenge, DeviceCert, decode_signed, encode_signed

AUTH_LABEL: Final = "auth"
CHALLENGE_TTL_MS: Final = 60 * 1000


def make_challenge(server: SigningKey, device_id: bytes, *, now: int, rng: Rng) -> bytes:
    """The exact challenge bytes the broker hands out (and remembers by nonce)."""
    challenge = AuthChallenge(
        server_key=server.public_key,
        device_id=device_id,
        nonce=rng(32),
        issued_at=now,
        expires_at=now + CHALLENGE_TTL_MS,
    )
    return challenge.encode()


def answer_challenge(keys: DeviceKeys, challenge: bytes, *, server_key: bytes) -> bytes:
    """Sign a challenge after checking it is for this device and the expected broker."""
    parsed = AuthChallenge.decode(challenge)
    if parsed.device_id != keys.device_id or not P.constant_time_equal(parsed.server_key, server_key):
        raise MalformedError("challenge is not for this device and broker")
    return encode_signed(challenge, keys.sign(AUTH_LABEL, challenge))


def verify_response(response: bytes, *, server_key: bytes, cert: DeviceCert, now: int) -> AuthChallenge:
    """Check a signed response; the caller must also check the nonce is unused."""
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
