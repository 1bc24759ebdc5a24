"""Fuzz case commits: ``CommitMessage.decode`` and ``verify_commit``, from genesis and from a real state.

Input: a mode byte, then the bytes.  Mode (modulo 4):

0. The bytes are a ``CommitMessage``, verified as a genesis (no previous state).
1. The bytes are a ``CommitMessage``, verified as the next commit after the real genesis.
2. The bytes are a genesis ``Commit`` body; the harness signs it as the case
   owner and attaches the real genesis wraps, so the fuzzer reaches the roster,
   certificate and wrap checks past the signature.
3. The same for the commit after the real genesis.

Whenever a commit verifies, the member's epoch secret and the sealed case info
are opened too: those parse what the committer chose.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["caseline"]):
    from caseline.crypto import commits
    from caseline.schemas import errors, wire

from fuzz.harness import main, split
from fuzz.scenario import build

SCENE = build()
NOW = SCENE.now
GENESIS = wire.CommitMessage.decode(SCENE.genesis)
COMMIT1 = wire.CommitMessage.decode(SCENE.commit1)
TRUST = SCENE.trust()


def _signed_by_owner(tbs: bytes, wraps: tuple[wire.Wrap, ...]) -> wire.CommitMessage:
    signature = SCENE.alice.keys.sign(commits.COMMIT_LABEL, tbs)
    return wire.CommitMessage(tbs=tbs, signature=signature, wraps=wraps)


def test_one_input(data: bytes) -> None:
    mode, body = split(data)
    mode %= 4
    prev = None if mode in (0, 2) else SCENE.genesis_state
    try:
        if mode < 2:
            message = wire.CommitMessage.decode(body)
        else:
            message = _signed_by_owner(body, (GENESIS if prev is None else COMMIT1).wraps)
        state = commits.verify_commit(prev, message, trust=TRUST, now=NOW)
        secret = commits.open_epoch_secret(state, message, SCENE.bob.keys)
        commits.open_case_info(state, secret)
    except errors.CaselineError:
        pass


if __name__ == "__main__":
    main(test_one_input)
