"""A partner's file name becomes one plain component inside the chosen folder, whatever it says."""

from __future__ import annotations

import unicodedata
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from caseline.client.filenames import MAX_NAME_BYTES, is_device_name, safe_name, unique_names
from hypothesis import example, given, settings
from hypothesis import strategies as st


def windows_reserved(name: str) -> bool:
    with warnings.catch_warnings():  # deprecated from 3.13 on, still the reference on 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        return PureWindowsPath(name).is_reserved()


def assert_harmless(result: str, folder: Path) -> None:
    assert result not in ("", ".", "..")
    assert PurePosixPath(result).parts == (result,)
    win = PureWindowsPath(result)
    assert win.parts == (result,) and not win.drive and not win.root
    assert (folder / result).resolve().parent == folder.resolve()
    assert not is_device_name(result) and not windows_reserved(result)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in result)
    assert not result.startswith(".") and not result.endswith((".", " "))
    assert len(result.encode("utf-8")) <= MAX_NAME_BYTES


NAMES = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(list("./\\:C \u202e\x1b\x00aN\u00b9ULOMP1x$")), max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "etc", "CON", "c:", "nul.txt", "a" * 200]), max_size=6).map(
        "/".join
    ),
)


@settings(max_examples=1500, deadline=None)
@given(name=NAMES)
@example(name="../../etc/passwd")
@example(name="COM\u00b9.txt")
@example(name="é" * 200 + ".jpg")
@example(name=" " * 300 + "CON")
def test_whatever_the_name_the_result_is_one_harmless_component(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.getbasetemp() / "out"
    result = safe_name(name, index=3)
    assert_harmless(result.name, folder)
    assert result.rewritten == (result.name != name)
    again = safe_name(result.name)
    assert (again.name, again.rewritten) == (result.name, False), "a safe name is kept as it is"


@pytest.mark.parametrize(
    ("given_name", "saved", "why"),
    [
        ("../../etc/passwd", "passwd", "folders"),
        ("/etc/passwd", "passwd", "folders"),
        ("C:\\Windows\\x.exe", "x.exe", "folders"),
        ("C:x.exe", "x.exe", "drive"),
        ("..\\..\\boot.ini", "boot.ini", "folders"),
        ("CON.txt", "_CON.txt", "device"),
        ("con", "_con", "device"),
        ("Lpt9.tar.gz", "_Lpt9.tar.gz", "device"),
        ("nul .txt", "_nul .txt", "device"),
        ("photo\u202egnp.exe", "photo_gnp.exe", "control or invisible"),
        ("report\x1b]52;c;aGk=\x07.pdf", "report_]52;c;aGk=_.pdf", "control or invisible"),
        ("zero\u200bwidth.png", "zero_width.png", "control or invisible"),
        (".bashrc", "bashrc", "began with a dot"),
        ("scan.pdf. . ", "scan.pdf", "ended with a dot"),
        ("a:b.txt", "b.txt", "drive"),
        ("scan.pdf:hidden", "scan.pdf_hidden", "Windows refuses"),
        ("..", "attachment-4", "nothing of it"),
        ("", "attachment-4", "nothing of it"),
        ("/", "attachment-4", "nothing of it"),
    ],
)
def test_each_kind_of_dangerous_name_is_rewritten_and_says_why(given_name: str, saved: str, why: str) -> None:
    result = safe_name(given_name, index=4)
    assert result.name == saved
    assert result.rewritten
    assert any(why in reason for reason in result.reasons), result.reasons


def test_an_over_long_name_is_cut_at_a_character_and_keeps_its_extension() -> None:
    result = safe_name("ü" * 300 + ".jpeg")
    assert result.name.endswith("ü.jpeg") and len(result.name.encode()) <= MAX_NAME_BYTES
    assert len(result.name.encode()) >= MAX_NAME_BYTES - 1  # cut, not emptied
    assert "longer than 255 bytes" in result.reasons[0]


@pytest.mark.parametrize(
    "name", ["photo.jpg", "Scan 2026-11-20 (2).pdf", "Überweisung.xlsx", "写真.png", "COMA.txt"]
)
def test_an_ordinary_name_is_kept_unchanged(name: str) -> None:
    assert safe_name(name) == safe_name(name).__class__(name, ())


@settings(max_examples=300, deadline=None)
@given(names=st.lists(NAMES, max_size=16))
@example(names=["a/x.jpg", "x.jpg", "X.JPG", "x-2.jpg"])
@example(names=["é" * 200 + ".jpg"] * 3)
def test_the_files_of_one_update_get_distinct_harmless_names(
    names: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.getbasetemp() / "out"
    result = unique_names(names)
    assert len(result) == len(names)
    for safe in result:
        assert_harmless(safe.name, folder)
    assert len({r.name.casefold() for r in result}) == len(result), "one file would replace another"


def test_a_second_file_of_the_same_name_is_numbered_and_says_why() -> None:
    first, second, third = unique_names(["../x.jpg", "x.jpg", "X.JPG"])
    assert (first.name, second.name, third.name) == ("x.jpg", "x-2.jpg", "X-3.JPG")
    assert second.reasons == ("another attachment of the update has the same name",)
