"""caseline's checkpoints cosigned by litewitness, a published C2SP tlog-witness.

Runs only where a litewitness binary is given (``CASELINE_LITEWITNESS``, with
``witnessctl`` beside it or in ``CASELINE_WITNESSCTL``): ``make interop`` builds both
and runs this scenario; CI does not build Go, so here it is skipped unless given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import litewitness as lw

_LITEWITNESS = os.environ.get("CASELINE_LITEWITNESS", "")
_WITNESSCTL = os.environ.get("CASELINE_WITNESSCTL") or str(Path(_LITEWITNESS).parent / "witnessctl")


def _missing() -> str:
    if not _LITEWITNESS:
        return "CASELINE_LITEWITNESS is not set (make interop builds litewitness and runs this)"
    for path in (_LITEWITNESS, _WITNESSCTL):
        if not os.access(path, os.X_OK):
            return f"no executable at {path}"
    for tool in ("ssh-keygen", "ssh-agent", "ssh-add"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian package openssh-client)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")


def test_litewitness_cosigns_caseline_checkpoints_and_refuses_a_fork() -> None:
    report = lw.run(Path(_LITEWITNESS), Path(_WITNESSCTL))
    statuses = [status for _, status, _ in report.steps]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 409  # stale old size
    assert statuses[4] == 422  # a fork: no consistency proof verifies
    assert statuses[5] == 403  # signed by a key the witness does not know for the origin
    assert statuses[6] in (403, 404)  # unknown origin (the spec says 404)
    assert statuses[7:] == [200, 200, 200]  # grows on; a note already cosigned; the proof sweep
    assert report.disagreements == []
