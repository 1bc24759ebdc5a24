"""Update references as a person types them: a short id, a unique prefix, a full id or ``#seq``."""

from __future__ import annotations

import pytest
from caseline.client.refs import MIN_PREFIX, SHORT, resolve_update, short_id
from caseline.schemas.errors import UsageError
from hypothesis import given
from hypothesis import strategies as st

ids = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True)


def test_the_short_id_is_the_first_eight_hex_digits() -> None:
    update = bytes(range(32))
    assert short_id(update) == "00010203"
    assert len(short_id(update)) == SHORT


@given(ids, st.data())
def test_the_full_id_and_any_unique_prefix_name_their_update(known: list[bytes], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(known))
    assert resolve_update(target.hex(), known) == target
    assert resolve_update(target.hex().upper(), known) == target
    # The shortest prefix no other id shares, and every longer one, names it.
    length = next(
        n
        for n in range(MIN_PREFIX, 65)
        if not any(o != target and o.hex().startswith(target.hex()[:n]) for o in known)
    )
    n = data.draw(st.integers(length, 64))
    assert resolve_update(target.hex()[:n], known) == target


def test_an_ambiguous_prefix_lists_the_candidates() -> None:
    a, b = bytes.fromhex("abcd01" + "00" * 29), bytes.fromhex("abcd02" + "00" * 29)
    with pytest.raises(UsageError) as raised:
        resolve_update("abcd", [a, b])
    assert "abcd0100" in str(raised.value) and "abcd0200" in str(raised.value)
    assert resolve_update("abcd01", [a, b]) == a


def test_an_update_not_in_the_case_is_refused_by_name() -> None:
    known = [bytes(32)]
    with pytest.raises(UsageError, match="no update ffff0000 in case 3f2a9c1b"):
        resolve_update("ffff0000", known, case="3f2a9c1b")


@pytest.mark.parametrize("ref", ["abc", "", "xyz12345", "0" * 65, "#", "#x"])
def test_what_is_not_an_update_reference_says_what_is_expected(ref: str) -> None:
    with pytest.raises(UsageError):
        resolve_update(ref, [bytes(32)])


def test_a_sequence_number_names_the_update_at_that_position() -> None:
    first, second = bytes(32), bytes([1]) * 32
    by_seq = {3: first, 7: second}
    assert resolve_update("#7", by_seq.values(), by_seq=by_seq) == second
    with pytest.raises(UsageError, match="no update #4"):
        resolve_update("#4", by_seq.values(), by_seq=by_seq)
    with pytest.raises(UsageError):
        resolve_update("#7", by_seq.values())  # no positions given: not guessed


def test_a_prefix_of_a_voided_update_is_refused_never_resolved_to_another() -> None:
    # The person saw abcd0100 and typed "abcd"; it has since turned voided (its sender's
    # revocation was learnt), and another member posted abcd0200 sharing the prefix.
    seen, ground = bytes.fromhex("abcd01" + "00" * 29), bytes.fromhex("abcd02" + "00" * 29)
    with pytest.raises(UsageError) as raised:
        resolve_update("abcd", [ground], withdrawn=[seen])
    assert "abcd0100" in str(raised.value) and "abcd0200" in str(raised.value)  # ambiguous: both named
    with pytest.raises(UsageError, match="abcd0100 in case 3f2a9c1b was voided"):
        resolve_update("abcd01", [ground], withdrawn=[seen], case="3f2a9c1b")
    assert resolve_update("abcd02", [ground], withdrawn=[seen]) == ground  # a prefix only it holds


@pytest.mark.parametrize(("kind", "why"), [("voided", "voided"), ("purged", "retention policy")])
def test_a_sequence_number_of_a_voided_or_purged_entry_is_refused(kind: str, why: str) -> None:
    other = bytes([1]) * 32
    by_seq = {7: other}
    with pytest.raises(UsageError, match=why):
        resolve_update("#3", by_seq.values(), by_seq=by_seq, gone={3: kind})
    assert resolve_update("#7", by_seq.values(), by_seq=by_seq, gone={3: kind}) == other
