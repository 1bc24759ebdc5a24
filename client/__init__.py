"""caseline's client: the async library (``Client``), agency administration and the CLI."""

from caseline.client.admin import AgencyAdmin
from caseline.client.client import CaseReport, CaseSummary, Client, Identity, Posted, verify_bundle
from caseline.client.core import Author, CaseEvent, Member
from caseline.client.profile import profile_dir
from caseline.schemas.errors import BrokerRefusal, BrokerUnavailable, ProfileError

__all__ = [
    "AgencyAdmin",
    "Author",
    "BrokerRefusal",
    "BrokerUnavailable",
    "CaseEvent",
    "CaseReport",
    "CaseSummary",
    "Client",
    "Identity",
    "Member",
    "Posted",
    "ProfileError",
    "profile_dir",
    "verify_bundle",
]
