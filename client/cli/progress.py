"""Progress of files going up or down, on stderr: a rich bar on a terminal, a few plain lines in a pipe.

stdout carries a command's results and its ``--json`` document, so progress
never goes there.  A terminal gets a bar per file with bytes, rate and time
left; a pipe or a log gets a line when a file starts, at most one per tenth
of it and per few seconds, and one when it is done — enough to see it move
without filling a log.  With ``--json`` and no terminal nothing is printed:
a script reads stdout, and its stderr is kept for the one-line error.

Imported only by a command that moves files, so that a plain ``--json`` post
does not load rich (tests/test_coldstart.py, issue 11).  The sinks follow
the library's ``ProgressSink`` protocol (``start(name, total_bytes)``,
``advance(n)``, ``done()``) by shape; a file's name is shown escaped, since
it may come from a partner.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, Protocol, TextIO

from caseline.client.cli.output import printable, size_text

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Between a file's first and last line, a plain line at most every this many seconds and every
#: tenth of the file: a file that takes a second gets two lines, a ten-minute one about twelve.
PLAIN_EVERY_SECONDS: Final = 3.0
PLAIN_STEPS: Final = 10


class Sink(Protocol):
    """What the library reports to (its ``ProgressSink``), restated so this module needs no client."""

    def start(self, name: str, total_bytes: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def done(self) -> None: ...


class Quiet:
    """Reports nothing: ``--json`` with no terminal to draw on."""

    def start(self, name: str, total_bytes: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


class PlainLines:
    """``uploading photo.jpg (1.2 MiB)`` … ``photo.jpg: 40 %`` … ``photo.jpg: done``, one line each.

    ``write`` and ``clock`` are given, so that what is printed when is plain
    arithmetic a test can drive.
    """

    def __init__(self, verb: str, write: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.verb, self._write, self._clock = verb, write, clock
        self._name, self._total, self._seen, self._step, self._since, self._began = "", 0, 0, 0, 0.0, 0.0

    def start(self, name: str, total_bytes: int) -> None:
        self._name, self._total, self._seen, self._step = printable(name, lines=False), total_bytes, 0, 0
        self._began = self._since = self._clock()
        self._write(f"{self.verb} {self._name} ({size_text(total_bytes)})")

    def advance(self, n: int) -> None:
        self._seen += n
        step = self._seen * PLAIN_STEPS // self._total if self._total else PLAIN_STEPS
        now = self._clock()
        if self._seen >= self._total:
            return  # ``done`` says it
        if step > self._step and now - self._since >= PLAIN_EVERY_SECONDS:
            self._step, self._since = step, now
            percent = self._seen * 100 // self._total
            self._write(f"{self._name}: {percent} % ({size_text(self._seen)} of {size_text(self._total)})")

    def done(self) -> None:
        took = max(self._clock() - self._began, 1e-6)
        self._write(
            f"{self._name}: done, {size_text(self._seen)} in {took:.1f} s ({size_text(self._seen / took)}/s)"
        )


class Bars:
    """A rich bar per file: name, bar, bytes done of total, rate, time left."""

    def __init__(self, verb: str, progress: Progress) -> None:
        self.verb, self._progress = verb, progress
        self._task: TaskID | None = None

    def start(self, name: str, total_bytes: int) -> None:
        from rich.markup import escape  # noqa: PLC0415 - rich only here

        label = escape(f"{self.verb} {printable(name, lines=False)}")
        self._task = self._progress.add_task(label, total=total_bytes)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def done(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, completed=task.total)
            self._task = None


@contextlib.contextmanager
def progress(verb: str, *, as_json: bool, stream: TextIO | None = None) -> Iterator[Sink]:
    """The sink for this run: bars on a terminal, lines in a pipe, nothing for ``--json`` in a pipe.

    The bars' live display ends when the block does, Ctrl-C included, so the
    terminal is left with the finished bars and a cursor where it belongs.
    """
    err = stream or sys.stderr
    if not err.isatty():
        if as_json:
            yield Quiet()
        else:
            yield PlainLines(
                verb, lambda line: print(f"caseline: {line}", file=err, flush=True), time.monotonic
            )
        return
    from rich.console import Console  # noqa: PLC0415 - rich only on a terminal
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TimeRemainingColumn(),
        console=Console(file=err, highlight=False),
    )  # fmt: skip
    with bars:
        yield Bars(verb, bars)
