"""Fuzz sealed updates: ``verify_envelope`` and ``CaseView.apply`` on a real, synced case view.

The view is Bob's, six entries into a real case (two epochs, updates from two
senders).  Input: a mode byte, then the bytes.  Mode (modulo 6):

0. The bytes are a signed envelope: ``verify_envelope`` against the current
   state, then ``apply`` as the next log entry.
1. The bytes are an envelope ``tbs``; the harness signs it as the member it
   names (Alice if none), then applies it.
2. The bytes are a signed *record* ``tbs``: the harness signs it, encrypts it
   under the right message key of the sender's chain and wraps it in a signed
   envelope whose header the record names, so the fuzzer reaches decryption,
   record checks, gossip and position checks, JSON content validation and
   history shares.
3. The real next envelope with the bytes as its receipt.
4. The bytes as the body of a ``purged`` entry, with a real receipt dated past retention.
5. The bytes as a ``commit`` entry.

Also checked: a rejected entry leaves the view exactly as it was.
"""

from __future__ import annotations

import copy

import atheris

with atheris.instrument_imports(include=["caseline"]):
    from caseline.crypto import caselog, updates
    from caseline.crypto import primitives as P
    from caseline.crypto.ratchet import Chain
    from caseline.schemas import errors, wire

from fuzz.harness import main, split
from fuzz.scenario import build

SCENE = build()
NOW = SCENE.now
DEVICES = SCENE.devices()
PRISTINE = SCENE.bob_view()


def fresh_view() -> caselog.CaseView:
    """A copy of the pristine view (its trust store and verified states are shared, read-only)."""
    memo: dict[int, object] = {id(PRISTINE.trust): PRISTINE.trust}
    memo.update({id(state): state for state in PRISTINE.states.values()})
    return copy.deepcopy(PRISTINE, memo)


VIEW = fresh_view()


def fingerprint(view: caselog.CaseView) -> tuple[object, ...]:
    """Everything a rejected entry must leave untouched."""
    return (
        view.count,
        tuple(view.heads),
        view.state,
        dict(view._slots),
        dict(view._last),
        dict(view._held),
        dict(view._message_keys),
        {k: (c.chain_key, c.next_index, dict(c.skipped)) for k, c in view._chains.items()},
    )


def _sign_envelope(tbs: bytes) -> bytes:
    try:
        sender = wire.Envelope.decode(tbs).sender
    except errors.CaselineError:
        sender = SCENE.alice.id
    device = DEVICES.get(sender, SCENE.alice)
    return wire.encode_signed(tbs, device.keys.sign(updates.ENVELOPE_LABEL, tbs))


def _seal_record(view: caselog.CaseView, record_tbs: bytes, nonce: bytes) -> bytes:
    """Wrap arbitrary record bytes exactly as a member's client would."""
    state = view.state
    assert state is not None
    try:
        record = wire.UpdateRecord.decode(record_tbs)
        header = (record.case_id, record.epoch, record.sender, record.counter)
    except errors.CaselineError:
        header = (state.case_id, state.epoch, SCENE.alice.id, 1)
    case_id, epoch, sender, counter = header
    device = DEVICES.get(sender, SCENE.alice)
    secret = view._epoch_secret
    assert secret is not None
    chain = Chain.start(epoch_secret=secret, case_id=case_id, epoch=epoch, device_id=sender)
    key = chain.peek(counter)
    plaintext = wire.encode_signed(record_tbs, device.keys.sign(updates.UPDATE_LABEL, record_tbs))
    aad = updates.envelope_aad(case_id, epoch, sender, counter)
    envelope = wire.Envelope(
        case_id=case_id,
        epoch=epoch,
        sender=sender,
        counter=counter,
        nonce=nonce,
        ciphertext=P.xchacha_seal(key, nonce, plaintext, aad),
    )
    tbs = envelope.encode()
    return wire.encode_signed(tbs, device.keys.sign(updates.ENVELOPE_LABEL, tbs))


def test_one_input(data: bytes) -> None:
    global VIEW  # noqa: PLW0603 - the view is rebuilt only after an entry is accepted
    mode, body = split(data)
    mode %= 6
    view = VIEW
    before = fingerprint(view)
    seq = view.count
    accepted = False
    try:
        if mode == 0:
            assert view.state is not None
            updates.verify_envelope(body, view.state)
            view.apply(seq=seq, kind=caselog.KIND_UPDATE, body=body, now=NOW)
        elif mode == 1:
            view.apply(seq=seq, kind=caselog.KIND_UPDATE, body=_sign_envelope(body), now=NOW)
        elif mode == 2:
            signed = _seal_record(view, body, bytes(24))
            view.apply(seq=seq, kind=caselog.KIND_UPDATE, body=signed, now=NOW)
        elif mode == 3:
            view.apply(seq=seq, kind=caselog.KIND_UPDATE, body=SCENE.next_envelope, now=NOW, receipt=body)
        elif mode == 4:
            view.apply(seq=seq, kind=caselog.KIND_PURGED, body=body, now=NOW, receipt=SCENE.old_receipt)
        else:
            view.apply(seq=seq, kind=caselog.KIND_COMMIT, body=body, now=NOW)
        accepted = True
    except errors.CaselineError:
        if fingerprint(view) != before:
            raise AssertionError("a rejected entry changed the view") from None
    if accepted:
        VIEW = fresh_view()


if __name__ == "__main__":
    main(test_one_input)
