"""Files riding on updates: STREAM encryption in fixed chunks, Padmé padding, blob addresses.

Each file gets a fresh random key and is cut into 64 KiB chunks, each sealed
with ChaCha20-Poly1305 under a nonce that binds its position and whether it is
the last (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as
age and Tink's streaming AEAD use it).  So whoever stores or relays the
ciphertext can cut, reorder, repeat or splice chunks only to be caught at the
chunk where it happened, and a reader can release each chunk's plaintext as it
authenticates, holding one chunk in memory whatever the file's size.

The plaintext is padded with zeros to a Padmé bucket before it is encrypted,
so that the broker learns a file's size only to within about 12 %.  The signed
record carries the exact size, the file's SHA-256 and the blob's address (a
labelled hash of the whole ciphertext); a reader checks all three before it
trusts the file as a whole.  PROTOCOL.md §6.6 is the specification.

Sans-I/O: ``Sealer`` and ``Opener`` take and give bytes; the client and the
evidence verifier feed them from files or the network.
"""

from __future__ import annotations

import hashlib
from typing import Final

from caseline.crypto import primitives as P
from caseline.schemas.errors import IntegrityError, InvalidValueError
from caseline.schemas.wire import MAX_ATTACHMENT_SIZE, AttachmentRef
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

CHUNK_SIZE: Final = 65536
TAG_SIZE: Final = 16
KEY_SIZE: Final = 32
#: Padding never goes below this many bytes, so small files all look alike.
MIN_PADDED: Final = 4096
AAD: Final = P.label("aad attachment")
ADDRESS_LABEL: Final = P.label("hash blob")


def padded_size(size: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): round up so that at most about log2(log2(size)) + 1
    low bits vary, which leaks O(log log size) bits and costs at most ~12 %."""
    if not 0 <= size <= MAX_ATTACHMENT_SIZE:
        raise InvalidValueError(f"a file of {size} bytes is beyond what an update can carry")
    size = max(size, MIN_PADDED)
    exponent = size.bit_length() - 1
    low_bits = exponent - exponent.bit_length()
    mask = (1 << low_bits) - 1
    return (size + mask) & ~mask


def chunk_count(size: int) -> int:
    """How many chunks the padded plaintext of a ``size``-byte file makes (at least one)."""
    return -(-padded_size(size) // CHUNK_SIZE)


def ciphertext_size(size: int) -> int:
    """The blob's length for a ``size``-byte file: what the broker stores and sees."""
    return padded_size(size) + TAG_SIZE * chunk_count(size)


def chunk_nonce(index: int, *, last: bool) -> bytes:
    """An 11-byte big-endian chunk counter and a last-chunk flag: STREAM's nonce."""
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class AddressHasher:
    """``SHA-256(L("hash blob") || u64(length) || ciphertext)``, fed as the bytes go by.

    The length comes first (64-bit: blobs may pass 4 GiB), so the address of a
    prefix can never be the address of a whole blob.
    """

    def __init__(self, length: int) -> None:
        self._hash = hashlib.sha256(ADDRESS_LABEL + P.u64(length))
        self.length = length
        self.fed = 0

    def update(self, data: bytes) -> None:
        self.fed += len(data)
        if self.fed > self.length:
            raise IntegrityError("the blob is longer than its declared length")
        self._hash.update(data)

    def digest(self) -> bytes:
        if self.fed != self.length:
            raise IntegrityError(f"the blob ended after {self.fed} of its {self.length} bytes")
        return self._hash.digest()


def blob_address(ciphertext: bytes) -> bytes:
    """The address of a whole blob held in memory (tests and vectors; big files stream)."""
    hasher = AddressHasher(len(ciphertext))
    hasher.update(ciphertext)
    return hasher.digest()


class Sealer:
    """Encrypts one file of a known size, fed in pieces of any length.

    ``feed`` returns the ciphertext of every chunk completed so far; ``finish``
    pads, seals the last chunk and returns what is left.  Afterwards ``ref``
    gives the reference that goes into the signed record.  The caller draws
    the key (32 random bytes, fresh for each file; the core takes its
    randomness as input) and journals it, so that a resumed upload can
    re-encrypt the same bytes under the same key to rebuild its hashes.
    """

    def __init__(self, size: int, *, key: bytes) -> None:
        self.size = size
        self.key = key
        if len(self.key) != KEY_SIZE:
            raise InvalidValueError("an attachment key is 32 bytes")
        self._aead = ChaCha20Poly1305(self.key)
        self._chunks = chunk_count(size)
        self._padded = padded_size(size)
        self._index = 0
        self._pending = bytearray()
        self._read = 0
        self._plain_hash = hashlib.sha256()
        self._address = AddressHasher(ciphertext_size(size))
        self._done: tuple[bytes, bytes] | None = None

    @property
    def ciphertext_size(self) -> int:
        return self._address.length

    def _seal(self, chunk: bytes, *, last: bool) -> bytes:
        sealed = self._aead.encrypt(chunk_nonce(self._index, last=last), chunk, AAD)
        self._index += 1
        self._address.update(sealed)
        return sealed

    def feed(self, data: bytes) -> bytes:
        if self._done is not None:
            raise InvalidValueError("the attachment was already sealed")
        self._read += len(data)
        if self._read > self.size:
            raise InvalidValueError(f"the file grew past the {self.size} bytes it had when it was attached")
        self._plain_hash.update(data)
        self._pending += data
        out = bytearray()
        # Keep at least one byte back while chunks remain: the last chunk must be
        # sealed with the last flag, and it may be a full one.
        while len(self._pending) > CHUNK_SIZE or (
            len(self._pending) == CHUNK_SIZE and self._index < self._chunks - 1
        ):
            out += self._seal(bytes(self._pending[:CHUNK_SIZE]), last=False)
            del self._pending[:CHUNK_SIZE]
        return bytes(out)

    def finish(self) -> bytes:
        if self._done is not None:
            raise InvalidValueError("the attachment was already sealed")
        if self._read != self.size:
            raise InvalidValueError(
                f"the file has {self._read} bytes, not the {self.size} it was attached with"
            )
        remaining = self._padded - (self._index * CHUNK_SIZE)
        self._pending += bytes(remaining - len(self._pending))
        out = bytearray()
        while self._index < self._chunks:
            last = self._index == self._chunks - 1
            out += self._seal(bytes(self._pending[:CHUNK_SIZE]), last=last)
            del self._pending[:CHUNK_SIZE]
        self._done = (self._plain_hash.digest(), self._address.digest())
        return bytes(out)

    @property
    def sha256(self) -> bytes:
        if self._done is None:
            raise InvalidValueError("the attachment is not sealed yet")
        return self._done[0]

    @property
    def address(self) -> bytes:
        if self._done is None:
            raise InvalidValueError("the attachment is not sealed yet")
        return self._done[1]

    def ref(self, name: str, media_type: str) -> AttachmentRef:
        return AttachmentRef(
            name=name,
            media_type=media_type,
            size=self.size,
            sha256=self.sha256,
            address=self.address,
            key=self.key,
        )


class Opener:
    """Decrypts and checks one blob against the reference in a signed record.

    ``feed`` returns the plaintext of each chunk that authenticated, in order,
    and never padding; ``finish`` checks that the blob was whole (the last
    chunk came last and nothing followed it), that the padding is zeros, and
    that the file's SHA-256 and the blob's address are the signed ones.  A
    caller must not act on the bytes before ``finish`` returns: a chunk proves
    it came from the key's holder, not that the file is complete.
    """

    def __init__(self, ref: AttachmentRef) -> None:
        self.ref = ref
        self._aead = ChaCha20Poly1305(ref.key)
        self._chunks = chunk_count(ref.size)
        self._index = 0
        self._pending = bytearray()
        self._given = 0
        self._plain_hash = hashlib.sha256()
        self._address = AddressHasher(ciphertext_size(ref.size))
        self._finished = False

    def _open(self, sealed: bytes) -> bytes:
        if self._index >= self._chunks:
            raise IntegrityError("the blob goes on after its last chunk")
        last = self._index == self._chunks - 1
        try:
            chunk = self._aead.decrypt(chunk_nonce(self._index, last=last), sealed, AAD)
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self._index} of the attachment failed authentication "
                "(altered, moved, repeated or cut)"
            ) from None
        self._index += 1
        keep = max(0, min(len(chunk), self.ref.size - self._given))
        if any(chunk[keep:]):
            raise IntegrityError("the attachment's padding is not zeros")
        self._given += keep
        plain = chunk[:keep]
        self._plain_hash.update(plain)
        return plain

    def feed(self, data: bytes) -> bytes:
        if self._finished:
            raise IntegrityError("the blob goes on after its end")
        self._address.update(data)
        self._pending += data
        out = bytearray()
        sealed_size = CHUNK_SIZE + TAG_SIZE
        while len(self._pending) >= sealed_size:
            out += self._open(bytes(self._pending[:sealed_size]))
            del self._pending[:sealed_size]
        return bytes(out)

    def finish(self) -> bytes:
        """The plaintext of the last (short) chunk; raises unless the whole blob checks."""
        if self._finished:
            raise IntegrityError("the blob was already finished")
        self._finished = True
        out = self._open(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        if self._index != self._chunks:
            raise IntegrityError(f"the blob was cut after chunk {self._index} of {self._chunks}")
        if not P.constant_time_equal(self._address.digest(), self.ref.address):
            raise IntegrityError("the blob is not the one the update names (its address differs)")
        if self._given != self.ref.size or not P.constant_time_equal(
            self._plain_hash.digest(), self.ref.sha256
        ):
            raise IntegrityError("the file does not match the size and SHA-256 its update declares")
        return out


def seal_bytes(data: bytes, *, name: str, media_type: str, key: bytes) -> tuple[AttachmentRef, bytes]:
    """A small file sealed in one go (tests, vectors, the demo): its reference and blob."""
    sealer = Sealer(len(data), key=key)
    blob = sealer.feed(data) + sealer.finish()
    return sealer.ref(name, media_type), blob


def open_bytes(ref: AttachmentRef, blob: bytes) -> bytes:
    """A small blob opened and checked in one go."""
    opener = Opener(ref)
    return opener.feed(blob) + opener.finish()
