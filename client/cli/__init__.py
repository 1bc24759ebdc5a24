"""``caseline``: the command line for officers, agency administrators and scripts.

Read commands print tables for people and, with ``--json``, one JSON document
for scripts.  Expected failures print one line — the reason and a hint — and
exit with the code of the error's family (``caseline.schemas.errors``); no
Python traceback reaches a person, not even for a bug.

Exit codes (stable, for scripts):
  0    done
  1    unexpected failure (a bug: please report it)
  2    your mistake: the command line, the content, an unknown case or member, or an
       act the case's rules or your certificate do not allow; nothing was sent
  3    untrusted: something received failed verification — do not rely on it
  4    refused by the broker (not a member, conflict, revoked…); nothing was changed
  5    temporary: no answer or a temporary refusal; run the same command again
  6    profile: this device's local state is missing, locked, unsafe or busy
  130  interrupted (Ctrl-C); an update already sealed is sent by the next run

The package is split by what each module holds: ``exits`` (this table's
policy and the one-line report), ``output`` (consoles, tables, JSON),
``params`` (what the command line's values mean), ``settings`` (the global
options and the passphrase), ``files`` (files written with secrets),
``officer`` and ``admin`` (the commands), ``root`` (the ``caseline`` group,
``--version`` and ``completion``).

The library (``Client``, ``AgencyAdmin``: aiohttp, aiosqlite) is imported by
the command that opens it, and rich only when something is printed for a
person: ``--help``, ``--version``, completion and a mistyped command answer
without loading either, and a ``--json`` post never loads rich.
"""

from __future__ import annotations

from caseline.client.cli.root import main

__all__ = ["main"]
