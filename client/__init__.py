"""caseline's client: the async library (``Client``), agency administration and the CLI.

The names below are imported on first use (PEP 562), not when the package is:
``caseline.client.core`` is the sans-I/O core and must stay importable — and
cheap to import — without aiohttp, aiosqlite or asyncio, e.g. by a web app's
pure rule checks or by a tool that only verifies bundles.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caseline.client.admin import AgencyAdmin
    from caseline.client.client import CaseReport, CaseSummary, Client, Identity, verify_bundle
    from caseline.client.content import Posted
    from caseline.client.core import Author, CaseEvent, Member
    from caseline.client.profile import profile_dir
    from caseline.client.uploads import AttachmentInfo, AttachmentSource, PendingUpload, ProgressSink
    from caseline.schemas.errors import BrokerRefusal, BrokerUnavailable, ProfileError

#: Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "AgencyAdmin": "caseline.client.admin",
    "AttachmentInfo": "caseline.client.uploads",
    "AttachmentSource": "caseline.client.uploads",
    "PendingUpload": "caseline.client.uploads",
    "ProgressSink": "caseline.client.uploads",
    "CaseReport": "caseline.client.client",
    "CaseSummary": "caseline.client.client",
    "Client": "caseline.client.client",
    "Identity": "caseline.client.client",
    "Posted": "caseline.client.content",
    "verify_bundle": "caseline.client.client",
    "Author": "caseline.client.core",
    "CaseEvent": "caseline.client.core",
    "Member": "caseline.client.core",
    "profile_dir": "caseline.client.profile",
    "BrokerRefusal": "caseline.schemas.errors",
    "BrokerUnavailable": "caseline.schemas.errors",
    "ProfileError": "caseline.schemas.errors",
}

__all__ = [
    "AgencyAdmin",
    "AttachmentInfo",
    "AttachmentSource",
    "Author",
    "BrokerRefusal",
    "BrokerUnavailable",
    "CaseEvent",
    "CaseReport",
    "CaseSummary",
    "Client",
    "Identity",
    "Member",
    "PendingUpload",
    "Posted",
    "ProfileError",
    "ProgressSink",
    "profile_dir",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
