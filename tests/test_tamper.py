"""Any single-byte change to any signed or sealed object is refused with our error.

One property test per object type: certificates, revocation lists, commits,
envelopes and receipts.  The change is a random byte at a random offset, so it
lands in lengths, tags, fields, signatures and ciphertext alike; the verifier
must raise a ``CaselineError`` (never accept, never crash with something else).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from caseline.crypto.caselog import CaseView, verify_receipt
from caseline.crypto.commits import verify_commit
from caseline.schemas.errors import CaselineError
from caseline.schemas.wire import CommitMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.world import World, open_case, post


def build() -> dict[str, tuple[bytes, Callable[[bytes], object]]]:
    w = World("tamper")
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice = w.device("ke-kra", "alice")
    bob = w.device("tz-tra", "bob")
    lost = w.device("tz-tra", "lost")
    crl = w.revoke(lost)
    broker, _, _ = open_case(w, alice, [(bob, "member")])
    view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(view)
    post(w, view, broker)

    def open_as_bob(body: bytes) -> object:
        fresh = CaseView(trust=w.trust(), me=bob.keys)
        fresh.apply(seq=0, kind="commit", body=broker.entries[0][1], now=w.now)
        return fresh.apply(seq=1, kind="update", body=body, now=w.now, receipt=broker.receipts[1])

    def add_crl(data: bytes) -> object:
        store = w.trust()
        store._crls.clear()
        store._crl_bytes.clear()
        return store.add_revocation_list(data)

    return {
        "device-cert": (alice.cert, lambda b: w.trust().verify_cert(b, at=w.now)),
        "revocation-list": (crl, add_crl),
        "commit": (
            broker.entries[0][1],
            lambda b: verify_commit(None, CommitMessage.decode(b), trust=w.trust(), now=w.now),
        ),
        "envelope": (broker.entries[1][1], open_as_bob),
        "receipt": (broker.receipts[1], lambda b: verify_receipt(b, w.server_key.public_key)),
    }


OBJECTS = build()


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_untouched_object_verifies(name: str) -> None:
    data, verify = OBJECTS[name]
    verify(data)


@pytest.mark.parametrize("name", sorted(OBJECTS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_single_byte_change_is_refused(name: str, data: st.DataObject) -> None:
    blob, verify = OBJECTS[name]
    mutated = bytearray(blob)
    index = data.draw(st.integers(0, len(blob) - 1), label="offset")
    mutated[index] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(CaselineError):
        verify(bytes(mutated))
