"""Private keys at rest: sealed under a passphrase, or a bot's owner-only key file.

A passphrase becomes a key through Argon2id (libsodium's ``pwhash`` via PyNaCl).
The default costs are libsodium's "moderate" limits (about half a second and
256 MiB here): slow enough that a stolen laptop's profile resists guessing, fast
enough for an officer.  ``interactive`` limits exist for small devices; both are
recorded in the sealed blob, and anything below ``interactive`` is refused so a
tampered file cannot talk the client into a cheaper derivation.

The derived key seals the secrets with XChaCha20-Poly1305; the associated data
binds the blob's purpose and cost parameters, so a device blob cannot be passed
off as an agency root and the costs cannot be edited.

Bots run unattended and cannot type a passphrase: their secrets live in a key
file that must be owner-only (mode 0600 or stricter) and owned by the user who
runs the bot.  Anything wider is refused, as OpenSSH does for private keys.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Final

import nacl.pwhash
from caseline.client.profile import check_private
from caseline.crypto import primitives as P
from caseline.crypto.keys import DeviceKeys, Rng
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import DecryptionError, ProfileError

VERSION: Final = 1
SALT_SIZE: Final = nacl.pwhash.argon2id.SALTBYTES
LIMITS: Final = {
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "interactive": (nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE),
}
MIN_OPS, MIN_MEM = LIMITS["interactive"]
MAX_OPS, MAX_MEM = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE
KEY_FILE_MAGIC: Final = "caseline-key-file"


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSecrets:
    """A device's two key seeds plus the key that seals its local state."""

    sign_seed: bytes
    kem_seed: bytes
    local_key: bytes

    @classmethod
    def generate(cls, rng: Rng) -> DeviceSecrets:
        return cls(sign_seed=rng(32), kem_seed=rng(32), local_key=rng(32))

    def keys(self) -> DeviceKeys:
        return DeviceKeys(sign_seed=self.sign_seed, kem_seed=self.kem_seed)

    def encode(self) -> bytes:
        return pack([self.sign_seed, self.kem_seed, self.local_key])

    @classmethod
    def decode(cls, data: bytes) -> DeviceSecrets:
        obj = unpack(data, max_size=256)
        if not (
            isinstance(obj, list) and len(obj) == 3 and all(type(x) is bytes and len(x) == 32 for x in obj)
        ):
            raise ProfileError("stored device secrets are damaged")
        return cls(sign_seed=obj[0], kem_seed=obj[1], local_key=obj[2])

    def __repr__(self) -> str:
        return "<DeviceSecrets>"


def _aad(purpose: str, ops: int, mem: int) -> bytes:
    return P.label("keystore") + pack([VERSION, purpose, ops, mem])


def seal(secret: bytes, passphrase: str, *, purpose: str, rng: Rng, limits: str = "moderate") -> bytes:
    """Seal ``secret`` under ``passphrase`` for one ``purpose`` (``device`` or ``agency-root``)."""
    if not passphrase:
        raise ProfileError("an empty passphrase protects nothing")
    ops, mem = LIMITS[limits]
    salt, nonce = rng(SALT_SIZE), rng(P.AEAD_NONCE_SIZE)
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)
    sealed = P.xchacha_seal(key, nonce, secret, _aad(purpose, ops, mem))
    return pack([VERSION, purpose, ops, mem, salt, nonce, sealed])


def open_sealed(blob: bytes, passphrase: str, *, purpose: str) -> bytes:
    obj = unpack(blob, max_size=4096)
    if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == VERSION and obj[1] == purpose):
        raise ProfileError(f"stored {purpose} key is damaged or of another kind")
    _, _, ops, mem, salt, nonce, sealed = obj
    if not (
        type(ops) is int and type(mem) is int and MIN_OPS <= ops <= MAX_OPS and MIN_MEM <= mem <= MAX_MEM
    ):
        raise ProfileError("stored key asks for key-derivation costs outside the allowed range")
    if (
        type(salt) is not bytes
        or len(salt) != SALT_SIZE
        or type(nonce) is not bytes
        or type(sealed) is not bytes
    ):
        raise ProfileError(f"stored {purpose} key is damaged")
    key = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=ops, memlimit=mem)
    try:
        return P.xchacha_open(key, nonce, sealed, _aad(purpose, ops, mem))
    except DecryptionError:
        raise ProfileError("wrong passphrase (or the stored key was altered)") from None


def write_key_file(path: Path, secrets: DeviceSecrets) -> None:
    """Create a bot's key file owner-only; never overwrite an existing one."""
    data = pack([KEY_FILE_MAGIC, VERSION, secrets.encode()])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ProfileError(f"{path} already exists; refusing to overwrite a key file") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_key_file(path: Path) -> DeviceSecrets:
    try:
        check_private(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"key file {path} does not exist") from None
    obj = unpack(data, max_size=512)
    if not (isinstance(obj, list) and len(obj) == 3 and obj[0] == KEY_FILE_MAGIC and obj[1] == VERSION):
        raise ProfileError(f"{path} is not a caseline key file")
    return DeviceSecrets.decode(obj[2])
