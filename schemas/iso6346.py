"""ISO 6346 container numbers: the check digit that catches a mistyped one.

A container number is an owner code (three letters), a category letter, six
serial digits and a check digit.  The check digit is the sum of each of the
first ten characters' values times 2**position, modulo 11, with 10 written as
0.  Letters count from A = 10 upwards, skipping the multiples of 11 (11, 22,
33), so that no letter's value is a multiple of 11.  A seizure report naming
the wrong container sends a partner to the wrong box, so every client refuses a
number whose digit does not match.
"""

from __future__ import annotations

import re
import string
from typing import Final

FORMAT: Final = re.compile(r"[A-Z]{4}[0-9]{7}")


def _letter_values() -> dict[str, int]:
    values: dict[str, int] = {}
    value = 10
    for letter in string.ascii_uppercase:
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    return values


_VALUES: Final = _letter_values() | {digit: int(digit) for digit in string.digits}


def check_digit(number: str) -> int:
    """The check digit of a container number's first ten characters (``ABCU123456``)."""
    if not FORMAT.fullmatch(number[:10] + "0"):
        raise ValueError("a container number is four capital letters and six or seven digits")
    return sum(_VALUES[char] << position for position, char in enumerate(number[:10])) % 11 % 10


def valid(number: str) -> bool:
    """Whether ``number`` is four capital letters, seven digits, and its last digit checks."""
    return bool(FORMAT.fullmatch(number)) and check_digit(number) == int(number[10])
