"""The aiohttp edge: HTTP requests and the WebSocket stream to one broker.

It speaks the API of PROTOCOL.md §9 and turns every failure into one of three
things: a ``BrokerRefusal`` carrying the broker's problem+json, a
``BrokerUnavailable`` when there was no answer, or the protocol's own
``MalformedError`` when an answer does not decode — a broker is never trusted
to send well-formed bytes.  Responses are read with a size cap for the same
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Final, TypeVar

import aiohttp
from caseline.crypto.auth import answer_challenge
from caseline.crypto.keys import DeviceKeys
from caseline.schemas.api import (
    REVOCATIONS_HEADER,
    UPLOAD_OFFSET_HEADER,
    UPLOAD_PART_TYPE,
    AgencyInfo,
    CaseList,
    ChallengeRequest,
    Cursor,
    Directory,
    EntryPage,
    ServerInfo,
    Session,
    Subscribe,
    UploadRequest,
    UploadState,
    WitnessedAnswer,
    revocation_etag,
)
from caseline.schemas.errors import (
    BrokerRefusal,
    BrokerUnavailable,
    BrokerUnknownCase,
    MalformedError,
    ProfileError,
    refusal_for,
)

MSGPACK: Final = "application/msgpack"
MAX_RESPONSE: Final = 64 * 1024 * 1024
MAX_FRAME: Final = 4 * 1024 * 1024
#: Seconds an idle pooled connection is kept for the next request.
KEEPALIVE_S: Final = 2.0
#: Times an idempotent request is sent again after the broker closed its pooled connection.
STALE_RESENDS: Final = 3
T = TypeVar("T")


async def _read(resp: aiohttp.ClientResponse, limit: int = MAX_RESPONSE) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise MalformedError("broker response is larger than any valid answer")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise MalformedError("broker response is larger than any valid answer")
        chunks.append(chunk)
    return b"".join(chunks)


def unreachable(exc: BaseException) -> str:
    """Why a connection failed, in an officer's words rather than aiohttp's class names."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted on this machine"
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = str(getattr(exc, "os_error", "") or exc)
        if any(word in reason for word in ("WRONG_VERSION_NUMBER", "record layer failure", "packet length")):
            return "it does not speak TLS (try http:// instead of https://)"
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (
            "connection refused"
            if isinstance(exc.os_error, ConnectionRefusedError)
            else exc.strerror or "no route"
        )
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "the connection closed before the answer"
    return "the answer did not arrive whole"


def _problem(status: int, body: bytes, headers: Mapping[str, str]) -> BrokerRefusal:
    code, detail = "http-error", f"HTTP {status}"
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        doc = json.loads(body[:16384])
        code = str(doc.get("type", "")).rsplit("/", 1)[-1][:64] or code
        detail = str(doc.get("detail", detail))[:300]
    retry_after = None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        retry_after = min(float(headers["Retry-After"]), 60.0)
    return refusal_for(status, code)(detail, status=status, problem=code, retry_after=retry_after)


class BrokerConnection:
    """An authenticated connection to one broker for one device."""

    def __init__(
        self,
        url: str,
        *,
        keys: DeviceKeys | None,
        server_key: bytes | None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.keys = keys
        self.server_key = server_key
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._session = session
        self._own_session = session is None
        self._token: str | None = None
        #: Told of every new session (token, expiry) and of a logout (None), to keep it across runs.
        self.on_session: Callable[[Session | None], Awaitable[None]] | None = None
        #: The broker's ``Caseline-Revocations`` digest from its latest answer, if it sent one.
        self.revocations_hint: str | None = None

    def resume(self, token: str) -> None:
        """Use a session token kept from an earlier run; a 401 still logs in again once."""
        self._token = token

    def forget_session(self) -> None:
        """Drop the session token the broker said has expired: the next request logs in again."""
        self._token = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Idle connections are let go well before a broker's idle timer (5 s by
            # default) would close them under a request.
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # ---------------------------------------------------------------- plumbing
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        auth: bool = True,
        retried: bool = False,
        idempotent: bool | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request; ``idempotent`` ones survive a pooled connection the broker closed.

        A broker closes an idle keep-alive connection after a few seconds, and
        a request written onto it just then fails with ``ServerDisconnectedError``
        though the broker never read it.  Reads, and writes whose repetition the
        protocol makes harmless (an update's same bytes, a certificate, a
        revocation list), are sent once more on a fresh connection.
        """
        headers = {"Content-Type": MSGPACK} if body is not None else {}
        headers.update(extra_headers or {})
        if auth:
            if self._token is None:
                await self.login()
            headers["Authorization"] = f"Bearer {self._token}"
        # Each stale pooled connection costs one more try; a pool holds few idle ones.
        resends = STALE_RESENDS if (method in ("GET", "PUT") if idempotent is None else idempotent) else 0
        while True:
            try:
                async with self.session.request(
                    method, self.url + path, data=body, headers=headers, timeout=self.timeout
                ) as resp:
                    data = await _read(resp)
                    status = resp.status
                    resp_headers = resp.headers
                    self._note_hint(resp_headers.get(REVOCATIONS_HEADER))
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A pooled connection closed under the request; no connection at all sent nothing.
                stale = isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
                if not (stale and resends) or isinstance(exc, aiohttp.ClientConnectorError):
                    # Status 0: no broker answered, so none refused (the CLI says so).
                    failed = BrokerUnavailable(
                        f"cannot reach the broker at {self.url}: {unreachable(exc)}", status=0
                    )
                    if method == "POST" and path.endswith("/updates"):
                        failed.hint = (
                            "temporary: run the same command again (a post resends the very same update)"
                        )
                    raise failed from None
                resends -= 1
        if status == 401 and auth and not retried:
            self._token = None  # expired or logged out: log in again once
            return await self.request(
                method,
                path,
                body=body,
                auth=auth,
                retried=True,
                idempotent=idempotent,
                extra_headers=extra_headers,
            )
        if status >= 400:
            raise _problem(status, data, resp_headers)
        return status, data

    def _note_hint(self, value: str | None) -> None:
        """Keep a well-formed ``Caseline-Revocations`` value; anything else counts as none sent."""
        ok = value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
        self.revocations_hint = value if ok else None

    # ---------------------------------------------------------------- public, unauthenticated
    async def server_info(self) -> ServerInfo:
        return ServerInfo.decode((await self.request("GET", "/v1/server", auth=False))[1])

    async def agency(self, agency_id: str) -> AgencyInfo:
        return AgencyInfo.decode((await self.request("GET", f"/v1/agencies/{agency_id}", auth=False))[1])

    async def revocations(self, agency_id: str, *, held: bytes | None = None) -> bytes | None:
        """The agency's list, or None when it has none or it is still ``held`` (a 304).

        ``held`` is the list this client already verified: its ETag is sent as
        ``If-None-Match``, so an unchanged list costs a header, not a body.
        """
        headers = {"If-None-Match": revocation_etag(held)} if held is not None else None
        try:
            status, body = await self.request(
                "GET", f"/v1/agencies/{agency_id}/revocations", auth=False, extra_headers=headers
            )
            return None if status == 304 else body
        except BrokerRefusal as exc:
            if exc.status == 404:
                return None
            raise

    async def put_revocations(self, agency_id: str, crl: bytes) -> None:
        await self.request("PUT", f"/v1/agencies/{agency_id}/revocations", body=crl, auth=False)

    async def witnesses(self, agency_id: str) -> bytes | None:
        """The agency's signed witness list as the broker holds it, or None if it has none."""
        try:
            return (await self.request("GET", f"/v1/agencies/{agency_id}/witnesses", auth=False))[1]
        except BrokerRefusal as exc:
            if exc.status == 404:
                return None
            raise

    async def put_witnesses(self, agency_id: str, signed: bytes) -> None:
        await self.request("PUT", f"/v1/agencies/{agency_id}/witnesses", body=signed, auth=False)

    async def log_witnessed(self, *, since: int, case_id: bytes | None = None) -> WitnessedAnswer | None:
        """Where the broker log stands, with proofs from ``since`` (None: a broker without a log)."""
        path = f"/v1/log/witnessed?since={since}"
        if case_id is not None:
            path += f"&case={case_id.hex()}"
        try:
            return WitnessedAnswer.decode((await self.request("GET", path))[1])
        except BrokerRefusal as exc:
            if exc.status == 404 and not isinstance(exc, BrokerUnknownCase):
                return None  # a broker from before the witnessed log (the caller knows if it had one)
            raise  # unknown-case: the broker does not show this device the case (removed from it)

    async def witness_checkpoint(self, url: str, origin: str) -> bytes | None:
        """The newest checkpoint of this log that one witness cosigned (C2SP monitoring), or None."""
        target = url.rstrip("/") + "/" + hashlib.sha256(origin.encode()).hexdigest() + "/checkpoint"
        try:
            async with self.session.get(target, timeout=self.timeout) as resp:
                data = await _read(resp)
        except (aiohttp.ClientError, TimeoutError):
            raise BrokerUnavailable(f"no answer from the witness at {url}") from None
        return data if resp.status == 200 else None

    async def witness_add_checkpoint(self, url: str, body: bytes) -> tuple[int, bytes]:
        """C2SP tlog-witness ``add-checkpoint``: the status and body, as the witness answered."""
        try:
            async with self.session.post(
                url.rstrip("/") + "/add-checkpoint", data=body, timeout=self.timeout
            ) as resp:
                return resp.status, await _read(resp)
        except (aiohttp.ClientError, TimeoutError):
            raise BrokerUnavailable(f"no answer from the witness at {url}") from None

    async def witness_equivocation(self, url: str, origin: str) -> bytes | None:
        """Ask one of our agency's witnesses, directly, whether the broker showed it two trees.

        The witness is the agency's own machine, not the broker: the one party a
        broker cannot keep a member from hearing about a split view it tried.
        """
        target = url.rstrip("/") + "/" + hashlib.sha256(origin.encode()).hexdigest() + "/equivocation"
        try:
            async with self.session.get(target, timeout=self.timeout) as resp:
                data = await _read(resp)
                return data if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None  # an unreachable witness is not evidence of anything

    async def register(self, cert: bytes) -> None:
        await self.request("POST", "/v1/devices", body=cert, auth=False, idempotent=True)

    async def login(self) -> None:
        """Challenge–response: sign the broker's fresh challenge, get a session token."""
        if self.keys is None or self.server_key is None:
            raise ProfileError("this profile has no enrolled device: run `caseline login --cert FILE`")
        # Both steps may be sent again on a fresh connection: a second challenge
        # costs nothing, and an answer the broker did use is refused, not reused.
        request = ChallengeRequest(device_id=self.keys.device_id).encode()
        path = "/v1/auth/challenge"
        _, challenge = await self.request("POST", path, body=request, auth=False, idempotent=True)
        response = answer_challenge(self.keys, challenge, server_key=self.server_key)
        path = "/v1/auth/session"
        _, body = await self.request("POST", path, body=response, auth=False, idempotent=True)
        session = Session.decode(body)
        self._token = session.token
        if self.on_session is not None:
            await self.on_session(session)

    async def logout(self) -> None:
        if self._token is not None:
            await self.request("POST", "/v1/auth/logout")
            self._token = None
            if self.on_session is not None:
                await self.on_session(None)

    # ---------------------------------------------------------------- authenticated
    async def directory(self, agency_id: str, user_id: str) -> Directory:
        return Directory.decode((await self.request("GET", f"/v1/directory/{agency_id}/{user_id}"))[1])

    async def cases(self) -> CaseList:
        return CaseList.decode((await self.request("GET", "/v1/cases"))[1])

    async def create_case(self, commit: bytes) -> bytes:
        return (await self.request("POST", "/v1/cases", body=commit))[1]

    async def commit(self, case_id: bytes, commit: bytes) -> bytes:
        return (await self.request("POST", f"/v1/cases/{case_id.hex()}/commits", body=commit))[1]

    async def post_update(self, case_id: bytes, envelope: bytes) -> bytes:
        path = f"/v1/cases/{case_id.hex()}/updates"
        return (await self.request("POST", path, body=envelope, idempotent=True))[1]

    async def entries(self, case_id: bytes, after: int) -> EntryPage:
        page = EntryPage.decode(
            (await self.request("GET", f"/v1/cases/{case_id.hex()}/entries?after={after}"))[1]
        )
        if page.case_id != case_id:
            raise MalformedError("the broker answered with another case's entries")
        return page

    # ---------------------------------------------------------------- blobs (PROTOCOL.md §9)
    def _long_timeout(self) -> aiohttp.ClientTimeout:
        """A body may take minutes; what must not take long is any one wait for the other side."""
        read = self.timeout.total or 30.0
        return aiohttp.ClientTimeout(total=None, sock_connect=self.timeout.sock_connect, sock_read=read)

    async def _auth_headers(self) -> dict[str, str]:
        if self._token is None:
            await self.login()
        return {"Authorization": f"Bearer {self._token}"}

    async def create_upload(self, case_id: bytes, length: int) -> UploadState:
        """Reserve a ``length``-byte upload in the case (counted against its quotas at once)."""
        path = f"/v1/cases/{case_id.hex()}/uploads"
        body = UploadRequest(length=length).encode()
        return self._upload_state((await self.request("POST", path, body=body))[1], length)

    async def upload_state(self, case_id: bytes, upload_id: bytes, length: int) -> UploadState:
        """Where the broker's copy of an upload stands: what to resume from."""
        path = f"/v1/cases/{case_id.hex()}/uploads/{upload_id.hex()}"
        return self._upload_state((await self.request("GET", path))[1], length, upload_id)

    async def delete_upload(self, case_id: bytes, upload_id: bytes) -> None:
        await self.request("DELETE", f"/v1/cases/{case_id.hex()}/uploads/{upload_id.hex()}", idempotent=True)

    @staticmethod
    def _upload_state(body: bytes, length: int, upload_id: bytes | None = None) -> UploadState:
        state = UploadState.decode(body)
        if state.length != length or (upload_id is not None and state.upload_id != upload_id):
            raise MalformedError("the broker answered for another upload than the one asked about")
        if state.offset > state.length:
            raise MalformedError("the broker claims more bytes of an upload than it has")
        return state

    async def patch_upload(
        self,
        case_id: bytes,
        upload_id: bytes,
        *,
        offset: int,
        size: int,
        body: AsyncIterable[bytes],
        length: int,
    ) -> UploadState:
        """Send ``size`` bytes at ``offset`` as one streamed PATCH body; the broker fsyncs before it answers.

        The body is streamed with its ``Content-Length`` (never chunked), so
        the broker can refuse an oversized part before reading it.  It cannot
        be sent twice: any failure is raised, and the caller asks
        ``upload_state`` where to go on from.
        """
        headers = await self._auth_headers()
        headers.update(
            {
                "Content-Type": UPLOAD_PART_TYPE,
                UPLOAD_OFFSET_HEADER: str(offset),
                "Content-Length": str(size),
            }
        )
        url = f"{self.url}/v1/cases/{case_id.hex()}/uploads/{upload_id.hex()}"
        try:
            async with self.session.patch(
                url, data=body, headers=headers, timeout=self._long_timeout()
            ) as resp:
                data = await _read(resp)
                self._note_hint(resp.headers.get(REVOCATIONS_HEADER))
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"the upload to the broker at {self.url} was cut: {unreachable(exc)}", status=0
            ) from None
        if status == 401:
            self._token = None  # the caller re-reads the offset, which logs in again
        if status >= 400:
            raise _problem(status, data, resp_headers)
        return self._upload_state(data, length, upload_id)

    @contextlib.asynccontextmanager
    async def blob(
        self, case_id: bytes, address: bytes, *, start: int = 0
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The bytes of a blob from ``start`` on, as the broker sends them (unverified: open them).

        Asks with ``Range`` when ``start`` is past 0; a broker that ignores it
        and sends the whole blob (200) is handled by dropping the first bytes.
        """
        for attempt in (0, 1):
            headers = await self._auth_headers()
            if start:
                headers["Range"] = f"bytes={start}-"
            url = f"{self.url}/v1/cases/{case_id.hex()}/blobs/{address.hex()}"
            try:
                resp = await self.session.get(url, headers=headers, timeout=self._long_timeout())
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BrokerUnavailable(
                    f"cannot reach the broker at {self.url}: {unreachable(exc)}", status=0
                ) from None
            try:
                self._note_hint(resp.headers.get(REVOCATIONS_HEADER))
                if resp.status == 401 and attempt == 0:
                    self._token = None
                    continue
                if resp.status >= 400:
                    raise _problem(resp.status, await _read(resp, 65536), resp.headers)
                skip = start if resp.status == 200 else 0
                if (
                    start
                    and resp.status == 206
                    and not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-")
                ):
                    raise MalformedError("the broker answered with another range of the blob than asked for")
                yield _blob_body(resp, skip, self.url)
                return
            finally:
                resp.release()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def stream(self, cursors: dict[bytes, int]) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """Open the device's WebSocket and subscribe from the given cursors."""
        if self._token is None:
            await self.login()
        try:
            ws = await self.session.ws_connect(
                self.url + "/v1/stream",
                headers={"Authorization": f"Bearer {self._token}"},
                max_msg_size=MAX_FRAME,
                compress=0,
                heartbeat=30.0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                self._token = None
            raise refusal_for(exc.status, "stream-refused")(
                exc.message, status=exc.status, problem="stream-refused"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"cannot follow the broker at {self.url}: {unreachable(exc)}", status=0
            ) from None
        try:
            subscribe = Subscribe(
                cursors=tuple(Cursor(case_id=c, after=n) for c, n in sorted(cursors.items()))
            )
            await ws.send_bytes(subscribe.encode())
            yield ws
        finally:
            await ws.close()


async def _blob_body(resp: aiohttp.ClientResponse, skip: int, url: str) -> AsyncIterator[bytes]:
    try:
        async for received in resp.content.iter_any():
            dropped = min(skip, len(received))
            skip -= dropped
            if dropped < len(received):
                yield received[dropped:]
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"the download from the broker at {url} was cut: {unreachable(exc)}", status=0
        ) from None


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    tries: int = 5,
    base_delay: float = 0.05,
    max_delay: float = 5.0,
    on_retry: Callable[[BrokerRefusal, int], None] | None = None,
) -> T:
    """Run ``attempt`` again after transient failures, with jittered exponential backoff.

    Only safe for idempotent attempts: posts qualify because a retry sends the
    very same sealed bytes, which the broker stores at most once.
    """
    for n in range(1, tries + 1):
        try:
            return await attempt()
        except BrokerRefusal as exc:
            if not exc.transient or n == tries:
                raise
            if on_retry is not None:
                on_retry(exc, n)
            delay = exc.retry_after if exc.retry_after is not None else base_delay * 2 ** (n - 1)
            await asyncio.sleep(min(delay, max_delay) * (0.5 + random.random() / 2))  # noqa: S311 - jitter  # nosec B311
    raise AssertionError("unreachable")  # pragma: no cover
