"""What can go wrong on the client side, sorted by what the person should do next.

The protocol's own errors (``caseline.schemas.errors``) mean "do not trust what
you received".  The classes here add the two other answers a caller needs: the
broker said no (``BrokerError``, permanent or temporary) and this device's own
state is unusable (``ProfileError``: no profile, wrong passphrase, a key file
others can read).
"""

from __future__ import annotations

from caseline.schemas.errors import CaselineError


class ProfileError(CaselineError):
    """This device's local state is missing, locked or unsafe."""

    code = "profile"
    status_hint = 400


class BrokerError(CaselineError):
    """The broker refused a request (an ``application/problem+json`` answer)."""

    code = "broker"
    status_hint = 502

    def __init__(self, status: int, problem: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"broker answered {status} {problem}: {detail}")
        self.status = status
        self.problem = problem
        self.detail = detail
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying unchanged: overload, rate limits and server-side failures."""
        return self.status in (408, 429, 500, 502, 503, 504, 507)


class BrokerUnavailable(BrokerError):
    """No answer at all: connection refused or reset, or a timeout."""

    code = "unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(0, "unavailable", detail)

    @property
    def transient(self) -> bool:
        return True
