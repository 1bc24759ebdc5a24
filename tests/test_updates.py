"""Sealed updates: confidentiality, authenticity and binding of every signed field."""

from __future__ import annotations

import dataclasses

import pytest
from caseline.crypto import primitives as P
from caseline.crypto.caselog import CaseView
from caseline.crypto.commits import CaseState
from caseline.crypto.ratchet import Chain
from caseline.crypto.updates import (
    SealedUpdate,
    envelope_aad,
    open_update,
    seal_update,
    verify_envelope,
)
from caseline.schemas.errors import (
    BadSignatureError,
    CaselineError,
    ChainError,
    DecryptionError,
    InvalidContentError,
    MalformedError,
    NotAllowedError,
    NotMemberError,
    NotPermittedError,
)
from caseline.schemas.wire import Envelope, LogPosition, UpdateRecord, decode_signed, encode_signed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.world import Device, World, note, open_case, post

ALERT = (
    b'{"lang":"en","markings":{"handling":"H1","information_assessment":"2",'
    b'"source_reliability":"B","tlp":"AMBER"},"reason":"x-ray anomaly",'
    b'"subject":{"container":"MSCU1234566","mode":"sea"},"subject_kind":"container"}'
)


class Setup:
    def __init__(self, seed: str = "updates") -> None:
        self.world = w = World(seed)
        w.agency("ke-kra")
        w.agency("tz-tra")
        self.alice = w.device("ke-kra", "alice")
        self.bob = w.device("tz-tra", "bob")
        self.watcher = w.device("tz-tra", "watcher")
        self.bot = w.device("ke-kra", "scanner", role="bot", scopes=("alert",))
        self.eve = w.device("ke-kra", "eve")
        self.broker, self.state, self.secret = open_case(
            w, self.alice, [(self.bob, "member"), (self.watcher, "observer"), (self.bot, "member")]
        )

    def chain_key(self, device: Device, counter: int = 0, state: CaseState | None = None) -> bytes:
        st_ = state or self.state
        chain = Chain.start(
            epoch_secret=self.secret, case_id=st_.case_id, epoch=st_.epoch, device_id=device.id
        )
        return chain.peek(counter)

    def seal(
        self,
        device: Device,
        content: bytes | None = None,
        content_type: str = "note",
        counter: int = 0,
    ) -> SealedUpdate:
        return seal_update(
            keys=device.keys,
            state=self.state,
            counter=counter,
            message_key=self.chain_key(device, counter),
            prev_own=b"",
            seen=(),
            log=LogPosition(count=1, head=self.broker.head),
            content_type=content_type,
            content=content or note(),
            now=self.world.now,
            nonce=self.world.rng(24),
        )


@pytest.fixture(scope="module")
def setup() -> Setup:
    return Setup()


def test_round_trip(setup: Setup) -> None:
    sealed = setup.seal(setup.alice, note("container MSCU1234565 held at Mombasa"))
    env, _ = verify_envelope(sealed.envelope, setup.state)
    opened = open_update(env, state=setup.state, message_key=setup.chain_key(setup.alice))
    assert opened.record == sealed.record
    assert opened.update_id == sealed.update_id
    assert b"MSCU1234565" not in sealed.envelope  # the broker sees ciphertext only


def test_non_member_envelope_is_refused(setup: Setup) -> None:
    w = setup.world
    sealed_state = dataclasses.replace(
        setup.state,
        members={**setup.state.members, setup.eve.id: setup.state.members[setup.bob.id]},
        certs={**setup.state.certs, setup.eve.id: w.verified(setup.eve)},
    )
    sealed = seal_update(
        keys=setup.eve.keys,
        state=sealed_state,
        counter=0,
        message_key=bytes(32),
        prev_own=b"",
        seen=(),
        log=LogPosition(count=1, head=setup.broker.head),
        content_type="note",
        content=note(),
        now=w.now,
        nonce=w.rng(24),
    )
    with pytest.raises(NotMemberError):
        verify_envelope(sealed.envelope, setup.state)


def test_observer_cannot_post(setup: Setup) -> None:
    with pytest.raises(NotPermittedError):  # the sender's own check: its mistake, not a verification
        setup.seal(setup.watcher)


def test_bot_posts_only_its_scopes(setup: Setup) -> None:
    setup.seal(setup.bot, ALERT, "alert")
    with pytest.raises(NotPermittedError):
        setup.seal(setup.bot, note(), "note")


def forge(setup: Setup, device: Device, *, content_type: str, header_counter: int) -> tuple[Envelope, bytes]:
    """Hand-build an envelope that skips ``seal_update``'s checks, as a rogue sender could.

    The record says counter 0; the visible header says ``header_counter``.
    """
    w = setup.world
    mk = setup.chain_key(device, header_counter)
    record = UpdateRecord(
        case_id=setup.state.case_id,
        epoch=0,
        sender=device.id,
        counter=0,
        prev_own=b"",
        seen=(),
        log=LogPosition(count=1, head=setup.broker.head),
        commit_hash=setup.state.commit_hash,
        content_type=content_type,
        content=note(),
        time=w.now,
    )
    tbs = record.encode()
    plain = encode_signed(tbs, device.keys.sign("update", tbs))
    nonce = w.rng(24)
    aad = envelope_aad(record.case_id, 0, device.id, header_counter)
    env = Envelope(
        case_id=record.case_id,
        epoch=0,
        sender=device.id,
        counter=header_counter,
        nonce=nonce,
        ciphertext=P.xchacha_seal(mk, nonce, plain, aad),
    )
    return env, mk


def test_bot_scope_is_enforced_by_receivers_too(setup: Setup) -> None:
    """A bot (or a broker holding a stolen bot key) that skips its own check is refused on open."""
    env, mk = forge(setup, setup.bot, content_type="note", header_counter=0)
    with pytest.raises(NotAllowedError):
        open_update(env, state=setup.state, message_key=mk)


def test_record_signed_by_one_member_cannot_be_reposted_by_another(setup: Setup) -> None:
    """Bob wraps Alice's signed record in his own envelope: the inner signer must be the sender."""
    sealed = setup.seal(setup.alice)
    env, _ = verify_envelope(sealed.envelope, setup.state)
    plain = P.xchacha_open(
        setup.chain_key(setup.alice),
        env.nonce,
        env.ciphertext,
        __import__("caseline.crypto.updates", fromlist=["envelope_aad"]).envelope_aad(
            env.case_id, 0, setup.alice.id, 0
        ),
    )
    mk = setup.chain_key(setup.bob)
    nonce = setup.world.rng(24)
    theft = Envelope(
        case_id=env.case_id,
        epoch=0,
        sender=setup.bob.id,
        counter=0,
        nonce=nonce,
        ciphertext=P.xchacha_seal(mk, nonce, plain, envelope_aad(env.case_id, 0, setup.bob.id, 0)),
    )
    with pytest.raises(BadSignatureError):
        open_update(theft, state=setup.state, message_key=mk)


def test_update_signature_is_not_an_envelope_signature(setup: Setup) -> None:
    sealed = setup.seal(setup.alice)
    tbs, _ = decode_signed(sealed.envelope)
    relabelled = encode_signed(tbs, setup.alice.keys.sign("update", tbs))
    with pytest.raises(BadSignatureError):
        verify_envelope(relabelled, setup.state)
    relabelled = encode_signed(tbs, setup.alice.keys.sign("commit", tbs))
    with pytest.raises(BadSignatureError):
        verify_envelope(relabelled, setup.state)


def test_header_that_differs_from_the_signed_record_is_refused(setup: Setup) -> None:
    """A sender who lies in the visible header (counter 5, record says 0) is caught."""
    env, mk = forge(setup, setup.alice, content_type="note", header_counter=5)
    with pytest.raises(MalformedError):
        open_update(env, state=setup.state, message_key=mk)


def test_message_key_opens_one_update_only(setup: Setup) -> None:
    first = setup.seal(setup.alice, counter=0)
    second = setup.seal(setup.alice, counter=1)
    env2, _ = verify_envelope(second.envelope, setup.state)
    with pytest.raises(DecryptionError):
        open_update(env2, state=setup.state, message_key=first.message_key)


def test_envelope_from_a_stale_epoch_is_refused(setup: Setup) -> None:
    sealed = setup.seal(setup.alice)
    later = dataclasses.replace(setup.state, epoch=1)
    with pytest.raises(ChainError):
        verify_envelope(sealed.envelope, later)


def test_invalid_content_is_refused_before_sealing(setup: Setup) -> None:
    with pytest.raises(InvalidContentError):
        setup.seal(setup.alice, b'{"text": "no markings"}')


_SEALED: dict[str, bytes] = {}


def _sealed_bytes(setup: Setup) -> bytes:
    if "env" not in _SEALED:
        _SEALED["env"] = setup.seal(setup.alice).envelope
    return _SEALED["env"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_rejected(setup: Setup, data: st.DataObject) -> None:
    """Flip any byte of a sealed envelope: it fails with a caseline error, never opens."""
    blob = bytearray(_sealed_bytes(setup))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    mk = setup.chain_key(setup.alice)
    with pytest.raises(CaselineError):
        _verify_and_open(bytes(blob), setup, mk)


def _verify_and_open(blob: bytes, setup: Setup, mk: bytes) -> None:
    env, _ = verify_envelope(blob, setup.state)
    open_update(env, state=setup.state, message_key=mk)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.binary(min_size=4, max_size=8),
    extra=st.integers(0, 3),
    text=st.text(min_size=1, max_size=200).filter(lambda t: "\x00" not in t),
    posts=st.integers(1, 4),
)
def test_seal_open_round_trip_for_random_cases(seed: bytes, extra: int, text: str, posts: int) -> None:
    """Random members, epochs and contents: every member opens exactly what was sealed."""
    w = World(seed.hex())
    w.agency("ke-kra")
    owner = w.device("ke-kra", "owner")
    others = [w.device("ke-kra", f"m{i}") for i in range(extra)]
    broker, _, _ = open_case(w, owner, [(d, "member") for d in others])
    views = [CaseView(trust=w.trust(), me=d.keys) for d in [owner, *others]]
    for v in views:
        broker.feed(v)
    sent = []
    for i in range(posts):
        author = views[i % len(views)]
        sent.append(post(w, author, broker, note(text)))
        for v in views:
            broker.feed(v)
    for v in views:
        assert v.count == posts + 1
    reader = CaseView(trust=w.trust(), me=others[0].keys if others else owner.keys)
    opened = [a.opened for a in broker.feed(reader) if a.opened]
    assert [o.record.content for o in opened] == [note(text)] * posts
