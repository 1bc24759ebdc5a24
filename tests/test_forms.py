"""Forms read from the schemas, schema errors in words, and ISO 6346 container numbers (issue 13, item 4).

The forms and the example command lines are checked against the validator
itself and, for the example commands, against a real broker through the real
CLI: a form that drifted from its schema, or an example that does not post,
fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import string
import subprocess
import sys
from typing import Any

import pytest
from caseline.client.cli.forms import FILLED_IN, example_command, example_fields
from caseline.crypto.updates import check_content
from caseline.schemas import content as content_schemas
from caseline.schemas import forms, iso6346
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE, ContentError, InvalidContentError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home

TYPES = sorted(content_schemas.CONTENT_TYPES)

# --------------------------------------------------------------------------- ISO 6346

#: The letter values ISO 6346 tabulates: A = 10, B = 12 … K = 21, L = 23 … U = 32, V = 34 … Z = 38.
LETTERS = dict(zip(string.ascii_uppercase, [10, *range(12, 22), *range(23, 33), *range(34, 39)], strict=True))


def reference_check_digit(number: str) -> int:
    total = 0
    for position, char in enumerate(number[:10]):
        value = LETTERS[char] if char.isalpha() else int(char)
        total += value * 2**position
    remainder = total % 11
    return 0 if remainder == 10 else remainder


@pytest.mark.parametrize("number", ["CSQU3054383", "MSKU1234565", "MSCU1234566", "TGHU7654320"])
def test_published_and_fixture_numbers_check(number: str) -> None:
    """CSQU3054383 is the standard's worked example (BIC); the others are the fixtures we use."""
    assert iso6346.valid(number)
    assert reference_check_digit(number) == int(number[10])


def test_protocol_md_works_its_example() -> None:
    """PROTOCOL.md §6.1 shows the sum for CSQU3054383; it must be the one the rule gives."""
    total = sum((LETTERS[c] if c.isalpha() else int(c)) * 2**i for i, c in enumerate("CSQU305438"))
    assert total == 6185 and total % 11 == 3


@pytest.mark.parametrize(
    "number", ["MSKU1234566", "CSQU3054384", "MSKU123456", "msku1234565", "MSKU12345650"]
)
def test_wrong_digits_and_forms_are_not_valid(number: str) -> None:
    assert not iso6346.valid(number)


@given(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=4, max_size=4),
    st.text("0123456789", min_size=6, max_size=6),
)
def test_check_digit_matches_the_reference(letters: str, digits: str) -> None:
    stem = letters + digits
    assert iso6346.check_digit(stem) == reference_check_digit(stem)
    assert iso6346.valid(stem + str(reference_check_digit(stem)))
    wrong = (reference_check_digit(stem) + 1) % 10
    assert not iso6346.valid(stem + str(wrong))


# --------------------------------------------------------------------------- errors in words

MARKINGS = {"handling": "H1", "tlp": "RED", "source_reliability": "X", "information_assessment": "4"}
SEIZURE: dict[str, Any] = {
    "markings": MARKINGS,
    "lang": "en",
    "occurred_at": "2026-11-20T06:40:00Z",
    "place": {"name": "Namanga"},
    "goods": [{"description": "ivory"}],
}


def refusal(content_type: str, doc: dict[str, Any]) -> ContentError:
    with pytest.raises(ContentError) as caught:
        content_schemas.validate_content(content_type, json.dumps(doc).encode(), sending=True)
    return caught.value


def test_h3_without_restrictions_says_which_field_to_add() -> None:
    error = refusal("note", {"markings": {"handling": "H3", "tlp": "RED"}, "lang": "en", "text": "x"})
    assert str(error) == "markings.restrictions is required when markings.handling is H3"
    assert error.fix is not None and error.fix.startswith("add --field markings.restrictions='…'")
    assert "restrictions an H3 handling code imposes" in error.fix


def test_graded_h3_seizure_names_the_same_condition() -> None:
    error = refusal("seizure", {**SEIZURE, "markings": {**MARKINGS, "handling": "H3"}})
    assert str(error) == "markings.restrictions is required when markings.handling is H3"


def test_an_unknown_field_lists_the_allowed_ones() -> None:
    error = refusal("seizure", {**SEIZURE, "colour": "red"})
    assert str(error) == "unknown field 'colour' for a seizure"
    assert error.fix is not None and "allowed here:" in error.fix
    for name in ("concealment", "conveyance", "goods", "occurred_at", "place", "summary"):
        assert name in error.fix


def test_an_unknown_field_suggests_the_closest() -> None:
    error = refusal("seizure", {**SEIZURE, "concealmnt": "false floor"})
    assert error.fix is not None and error.fix.startswith("did you mean 'concealment'?")
    nested = refusal("seizure", {**SEIZURE, "place": {"name": "x", "contry": "KE"}})
    assert str(nested) == "unknown field 'place.contry' for a seizure"
    assert nested.fix is not None and "did you mean 'place.country'?" in nested.fix


def test_a_value_outside_an_enum_lists_the_allowed_values() -> None:
    error = refusal("note", {"markings": {"handling": "H1", "tlp": "PINK"}, "lang": "en", "text": "x"})
    assert str(error) == "markings.tlp must be one of CLEAR, GREEN, AMBER, AMBER+STRICT, RED"
    # No value proposed for a word that is none of them: the first, CLEAR, would be a downgrade.
    assert error.fix == "give --field markings.tlp=VALUE with one of those"


@pytest.mark.parametrize("typed", ["red", "Red", "rde"])
def test_a_mistyped_value_is_matched_to_the_one_meant_never_to_a_default(typed: str) -> None:
    error = refusal("note", {"markings": {"handling": "H1", "tlp": typed}, "lang": "en", "text": "x"})
    assert error.fix == "did you mean RED? give --field markings.tlp=RED"


def test_a_field_required_inside_an_optional_object_says_so() -> None:
    """Posting a conveyance with only a container: mode is required because a conveyance was given."""
    error = refusal("seizure", {**SEIZURE, "conveyance": {"container": "CSQU3054383"}})
    assert str(error) == "conveyance.mode is required when conveyance is given"
    form = forms.describe("seizure")
    mode = form.field("conveyance.mode")
    assert not mode.required and mode.required_if_given == "conveyance"
    assert form.field("parties[].kind").required_if_given == "parties"
    assert (
        form.field("goods[].description").required and not form.field("goods[].description").required_if_given
    )


def test_an_alerts_condition_names_the_top_level_field() -> None:
    """subject.mode is required because of the top-level subject_kind, not a subject.subject_kind."""
    markings = {"handling": "H0", "tlp": "AMBER", "source_reliability": "B", "information_assessment": "2"}
    doc = {
        "markings": markings, "lang": "en", "subject_kind": "vehicle", "subject": {"plate": "KBX 123A"},
        "reason": "x",
    }  # fmt: skip
    error = refusal("alert", doc)
    assert str(error) == "subject.mode is required when subject_kind is vehicle or container or vessel"


@pytest.mark.parametrize("content_type", TYPES)
def test_no_example_is_a_placeholder(content_type: str) -> None:
    """Each field's example is one a person could have typed, not "text", 0 or a range's end."""
    for field in forms.describe(content_type).fields:
        if field.choices or field.example == []:
            continue
        assert field.example not in ("text", 0, -90, -180, 1), (content_type, field.path)


def test_a_pattern_is_said_in_words_with_an_example() -> None:
    error = refusal("seizure", {**SEIZURE, "conveyance": {"mode": "sea", "container": "MSKU12"}})
    assert str(error) == (
        "conveyance.container must be an ISO 6346 container number: four capital letters and seven digits,"
        " the last a check digit, e.g. CSQU3054383"
    )


def test_a_missing_field_is_named_with_its_type() -> None:
    error = refusal("note", {"markings": {"handling": "H1", "tlp": "RED"}, "lang": "en"})
    assert str(error) == "text is required for a note"
    assert (
        error.fix is not None and "--field text=" in error.fix and "text, 1 to 20000 characters" in error.fix
    )


def test_a_field_inside_a_list_says_to_fix_the_lists_json() -> None:
    error = refusal("seizure", {**SEIZURE, "parties": [{"kind": "person"}]})
    assert str(error) == "parties[0].family_name is required when parties[0].kind is person"
    assert error.fix is not None and "--file" in error.fix


def test_a_number_given_as_text_says_to_use_json() -> None:
    error = refusal("seizure", {**SEIZURE, "place": {"name": "x", "lat": "1.5"}})
    assert str(error) == "place.lat must be a number from -90 to 90"
    assert error.fix is not None and "--field place.lat:=" in error.fix


def test_a_container_number_with_a_wrong_check_digit_is_refused_without_echoing_it() -> None:
    error = refusal("seizure", {**SEIZURE, "conveyance": {"mode": "sea", "container": "MSKU1234566"}})
    assert str(error) == "the check digit of conveyance.container is wrong (expected 5)"
    assert "MSKU" not in str(error) and "MSKU" not in (error.fix or "")
    alert = {
        "markings": MARKINGS,
        "lang": "en",
        "subject_kind": "container",
        "subject": {"mode": "road", "container": "CSQU3054384"},
        "reason": "scan",
    }
    assert str(refusal("alert", alert)) == "the check digit of subject.container is wrong (expected 3)"
    ok = {**SEIZURE, "conveyance": {"mode": "sea", "container": "MSKU1234565"}}
    content_schemas.validate_content("seizure", json.dumps(ok).encode(), sending=True)


def test_the_check_digit_binds_senders_only() -> None:
    """An opened update with a wrong digit still opens: refusing it would stop the case's log."""
    typo = json.dumps({**SEIZURE, "conveyance": {"mode": "sea", "container": "MSKU1234566"}}).encode()
    check_content("seizure", typo)  # what open_update runs
    with pytest.raises(ContentError, match="check digit"):
        check_content("seizure", typo, sending=True)  # what seal_update runs
    with pytest.raises(ContentError, match="check digit"):
        content_schemas.encode_content("seizure", json.loads(typo))  # what the client's post runs


SECRET = "Wanjiru-secret-7731"


@pytest.mark.parametrize(
    ("content_type", "doc"),
    [
        ("seizure", {**SEIZURE, "summary": SECRET, "colour": SECRET}),
        ("seizure", {**SEIZURE, "summary": SECRET, "place": {"name": SECRET, "lat": SECRET}}),
        ("seizure", {**SEIZURE, "goods": [{"description": SECRET, "unit": SECRET}]}),
        ("seizure", {**SEIZURE, "conveyance": {"mode": "sea", "plate": SECRET, "imo": SECRET}}),
        ("note", {"markings": {"handling": SECRET, "tlp": "RED"}, "lang": "en", "text": SECRET}),
        ("note", {"markings": {"handling": "H1", "tlp": "RED"}, "lang": "en", "text": SECRET * 2000}),
        (
            "alert",
            {"markings": MARKINGS, "lang": "en", "subject_kind": "person", "subject": {}, "reason": SECRET},
        ),
    ],
)
def test_messages_never_carry_the_contents_values(content_type: str, doc: dict[str, Any]) -> None:
    """Content is confidential and a message may be logged: name the field, never quote the value."""
    error = refusal(content_type, doc)
    assert SECRET not in str(error) and SECRET not in (error.fix or "")
    assert "check failed" not in str(error)


def test_the_senders_error_carries_the_fix_as_its_hint() -> None:
    error = refusal("note", {"markings": {"handling": "H3", "tlp": "RED"}, "lang": "en", "text": "x"})
    sent = InvalidContentError(str(error), fix=error.fix)
    assert sent.hint.startswith("add --field markings.restrictions=")
    assert sent.hint.endswith("nothing was sent")
    assert InvalidContentError("x").hint == InvalidContentError.hint  # no fix: the class's advice
    assert ContentError.hint == error.hint  # a received update's error keeps the receiver's advice


# --------------------------------------------------------------------------- forms


def test_every_content_type_is_a_form() -> None:
    assert [s.content_type for s in forms.forms()] == TYPES
    seizure = next(s for s in forms.forms() if s.content_type == "seizure")
    assert seizure.title == "Seizure report"
    assert seizure.required == ("markings", "lang", "occurred_at", "place", "goods")


def test_the_seizure_form_has_its_fields_with_conditions_and_choices() -> None:
    form = forms.describe("seizure")
    restrictions = form.field("markings.restrictions")
    assert not restrictions.required and restrictions.required_when == "markings.handling is H3"
    assert form.field("markings.tlp").choices == ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
    assert form.field("markings.source_reliability").required  # graded
    assert form.field("goods").type == "a list of objects, at least 1, at most 100"
    assert form.field("goods[].description").required
    assert form.field("conveyance.container").example == "CSQU3054383"
    assert form.field("parties[].family_name").required_when == "parties[].kind is person"
    assert form.field("place.lat").type == "a number from -90 to 90"
    assert not form.field("markings.tlp").in_list and form.field("goods[].unit").in_list


def test_an_alerts_subject_depends_on_its_kind() -> None:
    form = forms.describe("alert")
    modes = [f for f in form.fields if f.path == "subject.mode"]
    assert [f.applies_when for f in modes] == ["subject_kind is vehicle or container or vessel"]
    assert modes[0].required


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        if not isinstance(doc.get(name), dict):
            doc[name] = {}
        doc = doc[name]
    doc[leaf] = value


@pytest.mark.parametrize("content_type", TYPES)
def test_every_example_validates(content_type: str) -> None:
    """The smallest document, and one with every plain field's example filled in, fit the schema."""
    smallest = forms.example_document(content_type)
    content_schemas.validate_content(content_type, json.dumps(smallest).encode())
    full = forms.example_document(content_type)
    for field in forms.describe(content_type).fields:
        if not field.in_list and not field.applies_when:
            _set(full, field.path, field.example)
    content_schemas.validate_content(content_type, json.dumps(full).encode())


def test_list_item_examples_validate() -> None:
    form = forms.describe("seizure")
    goods: dict[str, Any] = {}
    for field in form.fields:
        if field.path.startswith("goods[]."):
            _set(goods, field.path.removeprefix("goods[]."), field.example)
    doc = {**forms.example_document("seizure"), "goods": [goods]}
    content_schemas.validate_content("seizure", json.dumps(doc).encode())


def test_the_example_command_leaves_out_what_post_fills_in() -> None:
    fields = example_fields("seizure")
    assert fields == [
        "--field",
        "occurred_at=2026-11-20T06:40:00Z",
        "--field",
        "place.name=Namanga one-stop border post",
        "--field",
        'goods:=[{"description":"40 kg of khat in cartons"}]',
    ]
    assert not any(f.split("=")[0].split(".")[0] in FILLED_IN for f in fields[1::2])
    assert shlex.split(example_command("seizure"))[5:] == fields


# --------------------------------------------------------------------------- the command


def forms_cli(*args: str, columns: int = 80, tty: bool = False) -> subprocess.CompletedProcess[str]:
    """``caseline forms`` piped, or on a forced terminal of ``columns`` (rich honours TTY_COMPATIBLE)."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", **({"TTY_COMPATIBLE": "1"} if tty else {})}
    return subprocess.run(
        [sys.executable, "-m", "caseline.client.cli", "forms", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_forms_lists_the_types_with_their_required_fields() -> None:
    done = forms_cli()
    assert done.returncode == EXIT_OK, done.stderr
    for summary in forms.forms():
        assert summary.content_type in done.stdout
    assert "occurred_at, place, goods" in done.stdout
    assert "─" not in done.stdout  # piped: plain, no box lines
    listed = json.loads(forms_cli("--json").stdout)
    assert [item["type"] for item in listed] == TYPES


@pytest.mark.parametrize("columns", [40, 80])
def test_forms_show_wraps_and_never_cuts_a_path(columns: int) -> None:
    done = forms_cli("show", "alert", columns=columns, tty=True)
    assert done.returncode == EXIT_OK, done.stderr
    lines = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout).splitlines()  # NO_COLOR keeps bold and dim
    paths = [field.path for field in forms.describe("alert").fields]
    for path in paths:
        assert any(line == path or line.startswith(path + "  ") for line in lines), path
    # Only a path wider than the screen, and the command line, are left for the terminal to wrap.
    assert all(
        len(line) <= columns for line in lines if not line.startswith("caseline post") and line not in paths
    )
    assert example_command("alert") in lines  # the command is one line, to paste whole


@pytest.mark.parametrize("args", [(), ("show", "seizure"), ("show", "alert")])
def test_piped_forms_are_neither_padded_nor_wrapped(args: tuple[str, ...]) -> None:
    done = forms_cli(*args, columns=40)
    assert done.returncode == EXIT_OK, done.stderr
    lines = done.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines), [line for line in lines if line != line.rstrip()]
    if args:  # one line a field's head and each of its details, however narrow COLUMNS says
        paths = [field.path for field in forms.describe(args[1]).fields]
        assert all(any(line.startswith(path + "  ") for line in lines) for path in paths)
        assert any(len(line) > 40 for line in lines)


def test_forms_show_says_what_post_fills_in_and_what_an_optional_object_needs() -> None:
    done = forms_cli("show", "seizure")
    lines = done.stdout.splitlines()
    assert "conveyance.mode  required if conveyance is given" in lines
    assert "markings.handling  filled in from the case" in lines
    assert "markings.tlp  filled in from the case" in lines
    assert "lang  filled in as en unless given" in lines
    assert "markings.restrictions  required when markings.handling is H3" in lines
    assert "place.lat  optional" in lines
    assert "    example: -1.2921" in lines  # not the range's end, -90
    shown = json.loads(forms_cli("show", "seizure", "--json").stdout)
    by_path = {f["path"]: f for f in shown["fields"]}
    assert by_path["markings.tlp"]["filled_in"] is True and by_path["lang"]["filled_in"] is True
    assert by_path["occurred_at"]["filled_in"] is False
    assert by_path["conveyance.mode"]["required_if_given"] == "conveyance"


def test_a_mistyped_type_gets_a_suggestion() -> None:
    done = forms_cli("show", "siezure")
    assert done.returncode == EXIT_USAGE
    assert "did you mean seizure?" in done.stderr and "Traceback" not in done.stderr


def test_forms_show_json_describes_each_field() -> None:
    shown = json.loads(forms_cli("show", "seizure", "--json").stdout)
    by_path = {f["path"]: f for f in shown["fields"]}
    assert by_path["markings.restrictions"]["required_when"] == "markings.handling is H3"
    assert by_path["markings.handling"]["choices"] == ["H0", "H1", "H2", "H3"]
    assert by_path["goods[].description"]["required"] is True
    assert shown["example_command"] == example_command("seizure")


def test_forms_show_refuses_an_unknown_type_as_usage() -> None:
    done = forms_cli("show", "memo")
    assert done.returncode == EXIT_USAGE
    assert "seizure" in done.stderr and "Traceback" not in done.stderr


async def test_each_example_command_posts_through_the_real_cli(net: Network) -> None:
    """What `forms show` prints is what an officer pastes: it must post, for every type."""
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", handling="H1", tlp="RED")
    first = await alice.post_note(case_id, "the update the others answer")
    home, profile = cli_home(alice)
    placeholder = forms.example_document("reply")["in_reply_to"]
    for content_type in TYPES:
        argv = shlex.split(example_command(content_type).replace(placeholder, first.update_id.hex()))
        assert argv[:3] == ["caseline", "post", "CASE"]
        code, out, err = await cli(home, "--json", "--profile", profile, "post", case_id.hex(), *argv[3:])
        assert code == EXIT_OK, (content_type, err)
        seq = json.loads(out)["seq"]
        await alice.sync(case_id)
        [event] = [e for e in await alice.history(case_id) if e.seq == seq]
        assert event.content_type == content_type


async def test_the_cli_says_what_to_fix(net: Network) -> None:
    """Item 4's two examples, as an officer sees them."""
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", handling="H1", tlp="RED")
    home, profile = cli_home(alice)
    post = ("--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=x")
    code, _, err = await cli(home, *post, "--field", "markings.handling=H3")
    assert code == EXIT_USAGE, err
    assert "markings.restrictions is required when markings.handling is H3" in err
    assert "--field markings.restrictions=" in err and "Traceback" not in err
    code, _, err = await cli(home, *post, "--field", "colour=red")
    assert code == EXIT_USAGE, err
    assert "unknown field 'colour' for a note" in err and "allowed here:" in err
    container = ("--field", "conveyance.mode=sea", "--field", "conveyance.container=MSKU1234566")
    seizure = ("--profile", profile, "post", case_id.hex(), "--type", "seizure", *example_fields("seizure"))
    code, _, err = await cli(home, *seizure, *container)
    assert code == EXIT_USAGE, err
    assert "the check digit of conveyance.container is wrong (expected 5)" in err and "MSKU" not in err


JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8).map(lambda t: "ZZsecret" + t),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["kind", "mode", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(TYPES),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "markings.handling",
                    "markings.tlp",
                    "subject",
                    "goods",
                    "place",
                    "of",
                    "text",
                    "subject_kind",
                    "parties",
                    "conveyance",
                    "lang",
                    "colour",
                ]
            ),
            JUNK,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_any_broken_document_is_explained_in_words_without_its_values(
    content_type: str, changes: list[tuple[str, Any]]
) -> None:
    """Whatever is wrong, the explanation is a ContentError in words that quotes no value."""
    doc = forms.example_document(content_type)
    for path, value in changes:
        _set(doc, path, value)
    words: list[str] = []
    try:
        content_schemas.validate_content(content_type, json.dumps(doc).encode(), sending=True)
    except ContentError as error:
        words = [str(error), error.fix or ""]
    assert not any("ZZsecret" in w or "check failed" in w for w in words)
    assert not words or words[1]  # a refusal always says what to do


def test_a_received_document_is_refused_without_explaining_it() -> None:
    """The words are for the author; a receiver refusing a partner's update gets no field names.

    A hostile member's field names (control characters, secrets) then never reach another
    member's terminal or log, and explaining costs a receiver nothing.
    """
    doc = {**forms.example_document("note"), "\x1b]52;c;ZZsecret\x07": 1}
    with pytest.raises(ContentError) as refused:
        content_schemas.validate_content("note", json.dumps(doc).encode())
    assert str(refused.value) == "the note does not follow its schema"
    with pytest.raises(ContentError) as told:
        content_schemas.validate_content("note", json.dumps(doc).encode(), sending=True)
    assert "ZZsecret" not in str(told.value) and "\x1b" not in str(told.value)


@pytest.mark.parametrize("args", [(), ("show",)])
def test_help_gives_examples(args: tuple[str, ...]) -> None:
    done = forms_cli(*args, "--help")
    assert done.returncode == EXIT_OK
    examples = done.stdout.split("Examples:", 1)[1].split("Options:", 1)[0]
    assert "caseline forms show seizure" in examples
    assert "--json" in done.stdout and "Print one JSON document" in done.stdout
