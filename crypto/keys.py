"""Agency root keys and device keys, with fingerprints people can read aloud.

Private keys are 32-byte seeds.  ``repr`` of a key object shows only its public
fingerprint so that a stray log line or traceback cannot leak a secret.
Randomness is always passed in (``rng(n) -> bytes``): the core never reads the
OS RNG itself, which keeps it deterministic under test and in the vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from caseline.crypto import note
from caseline.crypto import primitives as P
from caseline.schemas.errors import UsageError
from caseline.schemas.wire import ID_SIZE

Rng = Callable[[int], bytes]

FINGERPRINT_GROUPS: Final = 6  # 6 groups of 5 digits: about 100 bits


def device_id_for(sign_key: bytes) -> bytes:
    """A device id is bound to its signing key: the id can name no other key."""
    return P.hash_labeled("device-id", sign_key)[:ID_SIZE]


def fingerprint(agency_id: str, root_key: bytes) -> str:
    """A 30-digit code for an agency root, read aloud over a phone in six groups.

    Digits survive every language and accent on a bad line better than letters.
    Each group is 5 bytes of a labelled SHA-256 reduced mod 10^5 (as Signal's
    safety numbers do), about 99.7 bits in all: far beyond a second-preimage
    search.  The agency id is bound in, so a root cannot be passed off under
    another agency's name.
    """
    return _digit_groups(P.hash_labeled("agency-fingerprint", agency_id.encode(), root_key))


def witness_fingerprint(name: str, public_key: bytes) -> str:
    """A witness key's 30-digit code, read aloud like an agency root's (``fingerprint``).

    Its own label keeps it from ever matching an agency fingerprint; the key name is
    bound in because a cosignature/v1 does not commit to it.
    """
    return _digit_groups(P.hash_labeled("witness-fingerprint", name.encode(), public_key))


def _digit_groups(digest: bytes) -> str:
    groups = [
        f"{int.from_bytes(digest[i * 5 : i * 5 + 5], 'big') % 100000:05d}" for i in range(FINGERPRINT_GROUPS)
    ]
    return " ".join(groups)


#: What a fingerprint looks like, for whoever typed one wrong.
FINGERPRINT_FORM: Final = "a fingerprint is 30 digits (6 groups of 5), as `caseline agency show` prints it"


class FingerprintError(UsageError, ValueError):
    """A fingerprint typed wrong: the caller's mistake (exit 2), and still a ``ValueError``."""


def normalize_fingerprint(text: str) -> str:
    """Accept a fingerprint typed with any spacing or dashes; raise if it is not 30 digits."""
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) != 5 * FINGERPRINT_GROUPS or any(ch not in "0123456789 -" for ch in text):
        raise FingerprintError(FINGERPRINT_FORM)
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))


class SigningKey:
    """An Ed25519 key pair from a 32-byte seed; signs only with a label."""

    __slots__ = ("_secret", "public_key", "seed")

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.public_key, self._secret = P.ed25519_keypair_from_seed(seed)

    @classmethod
    def generate(cls, rng: Rng) -> SigningKey:
        return cls(rng(P.SEED_SIZE))

    def sign(self, name: str, tbs: bytes) -> bytes:
        return P.sign_labeled(self._secret, name, tbs)

    def sign_note(self, text: bytes, *, name: str) -> note.NoteSignature:
        """A C2SP signed-note signature: raw Ed25519 over a note text (see ``note.py`` for
        why that cannot be mistaken for any of caseline's labelled signatures)."""
        return note.sign_note(text, name=name, secret_key=self._secret)

    def __repr__(self) -> str:
        return f"<SigningKey public={self.public_key.hex()[:16]}…>"


class AgencyRootKey(SigningKey):
    """An agency's root of trust: signs device certificates and revocation lists."""

    __slots__ = ("agency_id",)

    def __init__(self, agency_id: str, seed: bytes) -> None:
        super().__init__(seed)
        self.agency_id = agency_id

    @classmethod
    def generate_for(cls, agency_id: str, rng: Rng) -> AgencyRootKey:
        return cls(agency_id, rng(P.SEED_SIZE))

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.agency_id, self.public_key)

    def __repr__(self) -> str:
        return f"<AgencyRootKey {self.agency_id} {self.fingerprint}>"


class DeviceKeys:
    """A device's Ed25519 signing key and X-Wing (ML-KEM-768 + X25519) KEM key."""

    __slots__ = ("_kem_public", "device_id", "kem_seed", "signing")

    def __init__(self, *, sign_seed: bytes, kem_seed: bytes) -> None:
        P.require_hybrid_hpke()
        if len(kem_seed) != P.SEED_SIZE:
            raise ValueError("X-Wing seed must be 32 bytes")
        self.signing = SigningKey(sign_seed)
        self.kem_seed = kem_seed
        self._kem_public: bytes | None = None
        self.device_id = device_id_for(self.signing.public_key)

    @property
    def kem_public(self) -> bytes:
        """Derived on first use: an ML-KEM key expansion a command that only posts never needs.

        (About 25 ms of a ``caseline post``'s CPU, issue 11; posting uses the
        epoch secret, and the KEM key serves only commits and enrolment.)
        """
        if self._kem_public is None:
            self._kem_public = P.xwing_public_from_seed(self.kem_seed)
        return self._kem_public

    @classmethod
    def generate(cls, rng: Rng) -> DeviceKeys:
        return cls(sign_seed=rng(P.SEED_SIZE), kem_seed=rng(P.SEED_SIZE))

    @property
    def sign_public(self) -> bytes:
        return self.signing.public_key

    def sign(self, name: str, tbs: bytes) -> bytes:
        return self.signing.sign(name, tbs)

    def __repr__(self) -> str:
        return f"<DeviceKeys {self.device_id.hex()}>"
