"""The epoch key schedule and the per-sender hash ratchet.

From one epoch secret every member derives, for each sender device, a chain:
``ck_0 = KDF("sender-chain", epoch_secret; epoch, device)``, then one HKDF call
per step gives 64 bytes, ``mk_n || ck_{n+1} = KDF64("chain-step", ck_n; n)``.
The step is one-way, so a disclosed ``mk_n`` opens message n only, and a
chain key that was stepped past and deleted cannot be recomputed from later
state (forward secrecy inside the epoch).  Receivers keep keys for skipped
positions only up to ``MAX_SKIP``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from caseline.crypto import primitives as P
from caseline.schemas.errors import GapError, ReplayError

MAX_SKIP: Final = 2048


def epoch_key(name: str, *, epoch_secret: bytes, case_id: bytes, epoch: int, extra: bytes = b"") -> bytes:
    """A key for one labelled use of an epoch (case info, authenticator, chains)."""
    return P.kdf_labeled(name, secret=epoch_secret, salt=case_id, context=(P.u64(epoch), extra))


def sender_chain_key(*, epoch_secret: bytes, case_id: bytes, epoch: int, device_id: bytes) -> bytes:
    return epoch_key("sender-chain", epoch_secret=epoch_secret, case_id=case_id, epoch=epoch, extra=device_id)


def chain_step(chain_key: bytes, index: int) -> tuple[bytes, bytes]:
    """``(message key n, chain key n+1)`` from chain key n, in one HKDF call."""
    out = P.hkdf_sha256(
        ikm=chain_key, salt=b"", info=P.label("kdf chain-step") + P.lp(P.u64(index)), length=64
    )
    return out[:32], out[32:]


def epoch_authenticator(*, epoch_secret: bytes, case_id: bytes, epoch: int, commit_hash: bytes) -> str:
    """A 20-digit code members can compare out of band to confirm they share an epoch."""
    key = epoch_key(
        "epoch-authenticator",
        epoch_secret=epoch_secret,
        case_id=case_id,
        epoch=epoch,
        extra=commit_hash,
    )
    return " ".join(f"{int.from_bytes(key[i * 5 : i * 5 + 5], 'big') % 100000:05d}" for i in range(4))


@dataclasses.dataclass(slots=True)
class Chain:
    """One sender's chain within one epoch, as a sender or a receiver holds it.

    ``next_index`` is the first position whose key has not been handed out; keys
    for skipped positions wait in ``skipped`` until used or the chain is dropped.
    """

    chain_key: bytes
    next_index: int = 0
    skipped: dict[int, bytes] = dataclasses.field(default_factory=dict)

    @classmethod
    def start(cls, *, epoch_secret: bytes, case_id: bytes, epoch: int, device_id: bytes) -> Chain:
        return cls(
            sender_chain_key(epoch_secret=epoch_secret, case_id=case_id, epoch=epoch, device_id=device_id)
        )

    def peek(self, index: int) -> bytes:
        """The key for ``index`` without consuming it (so a failed open changes nothing)."""
        if index in self.skipped:
            return self.skipped[index]
        if index < self.next_index:
            raise ReplayError("message key already used")
        if index - self.next_index > MAX_SKIP:
            raise GapError("message is too far ahead of its sender's chain")
        ck = self.chain_key
        for i in range(self.next_index, index):
            ck = chain_step(ck, i)[1]
        return chain_step(ck, index)[0]

    def skip_to(self, index: int) -> None:
        """Step a sending chain to ``index`` without keeping the keys it passes."""
        if index < self.next_index:
            raise ReplayError("chain is already past that position")
        for i in range(self.next_index, index):
            self.chain_key = chain_step(self.chain_key, i)[1]
        self.next_index = index

    def take(self, index: int) -> bytes:
        """Consume the key for ``index``: step the chain past it and forget what it passes."""
        if index in self.skipped:
            return self.skipped.pop(index)
        if index < self.next_index:
            raise ReplayError("message key already used")
        if index - self.next_index > MAX_SKIP:
            raise GapError("message is too far ahead of its sender's chain")
        ck = self.chain_key
        for i in range(self.next_index, index):
            self.skipped[i], ck = chain_step(ck, i)
        if len(self.skipped) > MAX_SKIP:
            for old in sorted(self.skipped)[: len(self.skipped) - MAX_SKIP]:
                del self.skipped[old]
        key, self.chain_key = chain_step(ck, index)
        self.next_index = index + 1
        return key
