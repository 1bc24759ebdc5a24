"""The typed keys under which the broker application keeps what it shares.

They live apart from ``app.py`` (the factory and middleware) and ``routes.py``
(the handlers) so that both import them and neither imports the other's
module: the factory wires the routes in, the routes only read the keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from caseline.crypto.keys import SigningKey
from caseline.schemas.wire import DeviceCert
from caseline.server.admission import Admission, Ticket
from caseline.server.blob_service import Blobs
from caseline.server.challenges import DeviceLogins, UsedNonces
from caseline.server.config import ServerConfig
from caseline.server.core import BrokerCore
from caseline.server.deadlines import Deadlines
from caseline.server.failures import FailureLimiter, RejectionTally
from caseline.server.metrics import Metrics
from caseline.server.revocations import RevocationsDigest
from caseline.server.service import Broker
from caseline.server.store import SessionRow, Store
from caseline.server.stream import Connection, Hub
from caseline.server.witnessing import WitnessPusher

#: Milliseconds since the epoch; injected so that tests own time.
Clock = Callable[[], int]

CONFIG: Final = web.AppKey("config", ServerConfig)
STORE: Final = web.AppKey("store", Store)
CORE: Final = web.AppKey("core", BrokerCore)
BROKER: Final = web.AppKey("broker", Broker)
HUB: Final = web.AppKey("hub", Hub)
#: Attachment uploads and blobs (``blob_service.py``): their bytes, bookkeeping and collection.
BLOBS: Final = web.AppKey("blobs", Blobs)
METRICS: Final = web.AppKey("metrics", Metrics)
CLOCK: Final[web.AppKey[Clock]] = web.AppKey("clock")
SERVER_KEY: Final = web.AppKey("server_key", SigningKey)
#: The HMAC key of login-challenge nonces (``crypto/auth.py``): random per broker process.
NONCE_KEY: Final[web.AppKey[bytes]] = web.AppKey("nonce_key")
USED_NONCES: Final = web.AppKey("used_nonces", UsedNonces)
DEVICE_LOGINS: Final = web.AppKey("device_logins", DeviceLogins)
#: Failed authentications per source (``failures.py``): the limit, and the tally for the audit log.
AUTH_FAILURES: Final = web.AppKey("auth_failures", FailureLimiter)
REJECTIONS: Final = web.AppKey("rejections", RejectionTally)
#: Sessions by token hash, in front of the store: checking a token costs no database round trip.
#: Logout and revocation remove entries; a multi-instance deployment would share invalidations.
SESSIONS: Final[web.AppKey[dict[bytes, tuple[SessionRow, DeviceCert]]]] = web.AppKey("sessions")
AUDIT: Final[web.AppKey[Callable[[str, str], Awaitable[None]]]] = web.AppKey("audit")
REVOCATIONS: Final = web.AppKey("revocations", RevocationsDigest)
#: The witness pusher; absent when ``push_to_witnesses`` is off.
WITNESSING: Final = web.AppKey("witnessing", WitnessPusher)
#: The certificate of the device whose session authenticated this request (set by ``authenticate``).
SESSION_CERT: Final = web.RequestKey("session_cert", DeviceCert)
#: Pending revocation cut-offs by (agency, device): each runs at the device's ``revoked_at``.
CUTOFFS: Final[web.AppKey[Deadlines[tuple[str, bytes]]]] = web.AppKey("cutoffs")
#: Each open stream's session expiry: the stream is closed then (4002).
STREAM_EXPIRY: Final[web.AppKey[Deadlines[Connection]]] = web.AppKey("stream_expiry")
#: Requests being handled, per source and in all (``app.in_flight_middleware``).
IN_FLIGHT: Final = web.AppKey("in_flight", Admission)
#: The same for requests presenting a session the broker holds: a pool of their own, so that
#: anonymous floods (slow bodies, logins, guessed tokens) cannot take every slot from members.
IN_FLIGHT_SESSIONS: Final = web.AppKey("in_flight_sessions", Admission)
#: And for logins, whose bodies are small: held to the per-source limit only (``routes.LOGIN_ROUTES``).
IN_FLIGHT_LOGINS: Final = web.AppKey("in_flight_logins", Admission)
#: A request's place in ``IN_FLIGHT``: a WebSocket gives it back once upgraded (it is a connection then).
FLIGHT_TICKET: Final = web.RequestKey("flight_ticket", Ticket)
