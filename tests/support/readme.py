"""The README's fenced blocks, each with the rule that says how the doc test runs it.

Parsing is kept apart from running so that the doc test can first check that
no block escapes: every shell or Python block found by a plain scan must have
been given a rule here, and an annotation that names no rule is an error.

Annotations are HTML comments (invisible on GitHub) on the line just before a
block's opening fence:

    <!-- readme-test: dry-run -->                 make targets, checked with `make -n`
    <!-- readme-test: background until URL -->    a server: started, ready, URL answers 200
    <!-- readme-test: skip REASON -->             not run; the reason is required

A shell block with no annotation is run as written; a Python block is run with
a real broker (tests/test_readme.py says which names the harness provides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"
SHELL = frozenset({"sh", "bash", "console", "shell"})
PYTHON = frozenset({"python"})
#: Languages of blocks that show text and are never run (a transcript, a file's contents).
INERT = frozenset({"text", "toml", "json"})
FENCE = re.compile(r"^```(\S*)\s*$")
ANNOTATION = re.compile(r"^<!-- readme-test: (.*?) -->\s*$")
HEADING = re.compile(r"^## (.+?)\s*$")


class ReadmeError(Exception):
    """The README breaks the doc test's own rules (an unknown annotation, a block with no language)."""


@dataclass(frozen=True)
class Block:
    section: str  # the ``##`` heading it is under: one sandbox per section
    line: int  # 1-based line of its opening fence
    lang: str
    text: str
    rule: str  # run | dry-run | background | skip | python
    arg: str = ""  # the URL of ``background``, the reason of ``skip``

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.section})"

    def commands(self) -> str:
        """The shell text to run: a ``console`` block's ``$ `` lines (with their continuations)."""
        if self.lang != "console":
            return self.text
        lines, going = [], False
        for line in self.text.splitlines():
            if line.startswith("$ "):
                lines.append(line[2:])
                going = line.endswith("\\")
            elif going:
                lines.append(line)
                going = line.endswith("\\")
        return "\n".join(lines) + "\n"


def scan(text: str) -> list[tuple[int, str]]:
    """Every fenced block's (line, language), by the plainest possible reading: what must be covered."""
    found, inside = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if m is None:
            continue
        if not inside:
            found.append((number, m[1]))
        inside = not inside
    return found


def _rule(lang: str, annotation: str | None, line: int) -> tuple[str, str]:
    if annotation is None:
        return ("python", "") if lang in PYTHON else ("run", "")
    if lang not in SHELL:
        raise ReadmeError(f"README.md:{line}: readme-test annotations are for shell blocks only")
    if annotation == "dry-run":
        return "dry-run", ""
    if annotation.startswith("background until "):
        return "background", annotation.removeprefix("background until ").strip()
    if annotation.startswith("skip "):
        reason = annotation.removeprefix("skip ").strip()
        if len(reason) < 10:
            raise ReadmeError(f"README.md:{line}: a skip needs its reason written out")
        return "skip", reason
    raise ReadmeError(f"README.md:{line}: unknown readme-test annotation {annotation!r}")


def parse(text: str) -> list[Block]:
    """The shell and Python blocks, each with its section and rule; other languages must be inert."""
    blocks: list[Block] = []
    section, pending, start, lang, body = "(top)", None, 0, "", []
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if inside:
            if fence is None:
                body.append(line)
                continue
            inside = False
            if lang in SHELL | PYTHON:
                rule, arg = _rule(lang, pending, start)
                blocks.append(Block(section, start, lang, "\n".join(body) + "\n", rule, arg))
            elif pending is not None:
                raise ReadmeError(f"README.md:{start}: a readme-test annotation on a {lang} block")
            elif lang not in INERT:
                raise ReadmeError(
                    f"README.md:{start}: a block in {lang or 'no language'}: name it"
                    f" ({', '.join(sorted(SHELL | PYTHON | INERT))})"
                )
            pending = None
            continue
        if fence is not None:
            inside, start, lang, body = True, number, fence[1], []
            continue
        if (m := ANNOTATION.match(line)) is not None:
            pending = m[1].strip()
        elif line.strip():
            if pending is not None:
                raise ReadmeError(f"README.md:{number - 1}: a readme-test annotation not followed by a block")
            if (h := HEADING.match(line)) is not None:
                section = h[1]
    return blocks
