"""The epoch key schedule and the per-sender hash ratchet.

From one epoch secret every member derives, for each sender device, a chain:
``ck_0 = KDF("sender-chain", epoch_secret; epoch, device)``, then
``mk_n = KDF("message-key", ck_n; n)`` and ``ck_{n+1} = KDF("chain-step", ck_n; n)``.
Both steps are one-way, so a disclosed ``mk_n`` opens message n only, and a
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


def message_key(chain_key: bytes, index: int) -> bytes:
    return P.kdf_labeled("message-key", secret=chain_key, salt=b"", context=(P.u64(index),))


def next_chain_key(chain_key: bytes, index: int) -> bytes:
    return P.kdf_labeled("chain-step", secret=chain_key, salt=b"", context=(P.u64(index),))


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
            ck = next_chain_key(ck, i)
        return message_key(ck, index)

    def skip_to(self, index: int) -> None:
        """Step a sending chain to ``index`` without keeping the keys it passes."""
        if index < self.next_index:
            raise ReplayError("chain is already past that position")
        for i in range(self.next_index, index):
            self.chain_key = next_chain_key(self.chain_key, i)
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
            self.skipped[i] = message_key(ck, i)
            ck = next_chain_key(ck, i)
        if len(self.skipped) > MAX_SKIP:
            for old in sorted(self.skipped)[: len(self.skipped) - MAX_SKIP]:
                del self.skipped[old]
        key = message_key(ck, index)
        self.chain_key = next_chain_key(ck, index)
        self.next_index = index + 1
        return key
