"""Case-update content: the schemas, the strict parser, and what they refuse."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from caseline.schemas import content
from caseline.schemas.errors import ContentError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.content import EXAMPLES, MARK, second_validator


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("kind", sorted(content.CONTENT_TYPES))
def test_valid_examples_pass_and_round_trip(kind: str) -> None:
    data = content.encode_content(kind, EXAMPLES[kind])
    assert content.validate_content(kind, data) == EXAMPLES[kind]
    assert content.encode_content(kind, content.validate_content(kind, data)) == data


def test_every_content_type_has_an_example() -> None:
    assert set(EXAMPLES) == content.CONTENT_TYPES


def mutations(kind: str) -> list[dict[str, Any]]:
    base = EXAMPLES[kind]
    return [
        {k: v for k, v in base.items() if k != "markings"},
        {**base, "unknown": 1},
        {**base, "markings": {**base["markings"], "handling": "H9"}},
        {**base, "markings": {**base["markings"], "handling": "H3"}},
        {**base, "lang": "english please"},
        {**base, "refs": ["not-hex"]},
    ]


@pytest.mark.parametrize("kind", sorted(content.CONTENT_TYPES))
def test_bad_documents_are_refused_and_a_second_validator_agrees(kind: str) -> None:
    second = second_validator(kind)
    assert second.is_valid(EXAMPLES[kind])
    for bad in mutations(kind):
        with pytest.raises(ContentError):
            content.validate_content(kind, enc(bad))
        assert not second.is_valid(bad)


@pytest.mark.parametrize(
    ("kind", "patch"),
    [
        ("seizure", {"goods": [{"description": "x", "hs_code": "12A4"}]}),
        ("seizure", {"goods": []}),
        ("seizure", {"conveyance": {"mode": "sea", "container": "MSCU123456"}}),
        ("seizure", {"conveyance": {"mode": "sea", "imo": "IMO 12345"}}),
        ("seizure", {"conveyance": {"mode": "road", "vin": "1HGCM82633A00435O"}}),
        ("seizure", {"parties": [{"kind": "person", "name": "Acme Ltd"}]}),
        ("seizure", {"markings": MARK}),  # grades are required on a seizure
        ("alert", {"subject": {"mode": "sea", "container": "bad"}, "subject_kind": "container"}),
        ("request", {"urgency": "whenever"}),
        ("reply", {"in_reply_to": "AB" * 32}),
        ("ack", {"level": "read"}),
        ("note", {"text": ""}),
        ("note", {"text": 5}),
    ],
)
def test_specific_fields_are_checked(kind: str, patch: dict[str, Any]) -> None:
    with pytest.raises(ContentError):
        content.validate_content(kind, enc({**EXAMPLES[kind], **patch}))


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "a": 2}',
        b'{"markings": {"handling": "H0", "handling": "H1"}}',
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b"\xef\xbb\xbf{}",
        b'{"text": "\xff"}',
        b'{"text": "\\ud800"}',
        b"[]",
        b"5",
        b"",
        b"{" * 40 + b"}" * 40,
        b"[" * 5000 + b"]" * 5000,
        b'{"text": "' + b"x" * 70000 + b'"}',
    ],
)
def test_hostile_json_is_refused(data: bytes) -> None:
    with pytest.raises(ContentError):
        content.validate_content("note", data)


def test_errors_do_not_echo_the_content() -> None:
    private = "Otieno-passport-AK123456"
    with pytest.raises(ContentError) as info:
        content.validate_content("note", enc({"markings": MARK, "lang": "en", "text": 7, "x": private}))
    assert private not in str(info.value)


def test_unknown_content_type() -> None:
    with pytest.raises(ContentError):
        content.validate_content("memo", enc(EXAMPLES["note"]))


def test_answer_deadlines_follow_article_5_and_the_older_names_mean_the_same() -> None:
    assert content.answer_deadline_seconds("urgent-direct") == 8 * 3600
    assert content.answer_deadline_seconds("urgent-indirect") == 3 * 86400
    assert content.answer_deadline_seconds("other") == 7 * 86400
    assert content.answer_deadline_seconds("urgent") == 8 * 3600
    assert content.answer_deadline_seconds("standard") == 3 * 86400
    assert content.answer_deadline_seconds("non-urgent") == 7 * 86400
    assert content.request_category({"urgency": "standard"}) == "urgent-indirect"
    assert content.request_category({"category": "other"}) == "other"
    with pytest.raises(ContentError):
        content.answer_deadline_seconds("asap")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_raise_only_content_errors(data: bytes) -> None:
    for kind in ("note", "seizure"):
        with contextlib.suppress(ContentError):
            content.validate_content(kind, data)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=20,
    )
)
def test_arbitrary_json_raises_only_content_errors(value: object) -> None:
    with contextlib.suppress(ContentError):
        content.validate_content("alert", json.dumps({"subject_kind": "person", "subject": value}).encode())


def test_numbers_that_overflow_to_infinity_are_refused() -> None:
    """``1e999`` is valid JSON that Python would read as infinity."""
    with pytest.raises(ContentError):
        content.decode_json(b'{"n": 1e999}')
    assert content.decode_json(b'{"n": 1e300}') == {"n": 1e300}
