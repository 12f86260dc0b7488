"""The guards in front of the app, as pure ASGI middleware: what a request may hold before a route sees it.

From the outside in, each before the next holds anything:
    KeyCheck       the API key, from the headers alone: a request without it is answered 401 before its body is
                   read or anything is counted for it
    ClientCap      requests one client address may have open at once
    BodyLimit      the body: only where a route takes one, up to its size, within its read timeout, inside a
                   budget of bytes held across all requests (an upload goes to a temporary file instead)
    InFlightLimit  requests being answered at once, counted once their body has arrived
A stalled or keyless sender therefore never holds what a key holder needs. (When the count came first, 256 keyless
connections that each sent one byte of a declared body held in-flight places until their deadline, and key holders
were answered 503: bench/serve_attack.py.)
"""

import asyncio
import hmac
import tempfile
from collections import Counter
from collections.abc import Callable

from fastapi.responses import JSONResponse

from critic.serve.settings import ServeSettings

RETRY_AFTER = {"Retry-After": "1"}
DRAIN_BYTES = 64 << 20  # read at most this much of a refused body before answering 413 (then the connection closes)
PROBES = ("/healthz", "/readyz")
PAGE = ("/", "/page.js", "/page.css")  # the page asks for the key itself, and sends it with each call
UPLOAD_PATH = "/v1/score-csv"
UPLOAD_FILE = "critic.upload"  # the scope key under which BodyLimit hands an upload's body to the route

Refused = Callable[[str, int], None]  # (path, status) of a request a guard answered itself: for the metrics


def client_address(scope) -> str:
    return (scope.get("client") or ("unknown",))[0]


def takes_body(scope) -> bool:
    return scope["method"] == "POST" and scope["path"].startswith("/v1/")


async def refuse(scope, send, status: int, detail: str, refused: Refused, headers: dict | None = None) -> None:
    """A guard's own answer; the connection closes after it, so a body left unread is never read."""
    refused(scope["path"], status)
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close", **(headers or {})})
    await response(scope, _nothing, send)


async def _nothing():
    return {"type": "http.disconnect"}


class KeyCheck:
    """With an API key set, every path but the probes and the page needs it in X-API-Key, checked from the headers
    before anything else happens (the metrics, the schema and the docs are behind it too)."""

    def __init__(self, app, api_key: str | None, refused: Refused):
        self.app = app
        self.expected = api_key.encode() if api_key else None
        self.refused = refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.expected is None or scope["path"] in PROBES + PAGE:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-api-key", b"")
        # Compared as bytes: a header arrives as Latin-1, and compare_digest refuses non-ASCII str
        if not hmac.compare_digest(given, self.expected):
            return await refuse(scope, send, 401, "missing or wrong X-API-Key header", self.refused)
        await self.app(scope, receive, send)


class ClientCap:
    """At most `limit` requests open at once from one client address (the probes apart), from their headers on."""

    def __init__(self, app, limit: int, refused: Refused):
        self.app = app
        self.limit = limit
        self.refused = refused
        self.open: Counter = Counter()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        address = client_address(scope)
        if self.open[address] >= self.limit:
            detail = f"busy: {self.open[address]} requests from {address} in progress; try again"
            return await refuse(scope, send, 503, detail, self.refused, RETRY_AFTER)
        self.open[address] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[address] -= 1
            if not self.open[address]:
                del self.open[address]


class ByteBudget:
    """Bytes of request bodies held in memory: at most `limit` for all requests together, and at most `per_client`
    for one client address, so that one sender of stalled bodies cannot take the whole budget."""

    def __init__(self, limit: int, per_client: int):
        self.limit, self.per_client = limit, per_client
        self.held = 0
        self.by_client: Counter = Counter()

    def take(self, size: int, client: str) -> bool:
        if self.held + size > self.limit or self.by_client[client] + size > self.per_client:
            return False
        self.held += size
        self.by_client[client] += size
        return True

    def give(self, size: int, client: str) -> None:
        self.held -= size
        self.by_client[client] -= size
        if self.by_client[client] <= 0:
            del self.by_client[client]


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Reads a request's body before any route sees it, and answers for it:
    - 405 at once for a body where no route takes one (only POST /v1/... does; a probe never reads one);
    - 413 at its size limit + 1 byte, whether or not the body declares its length (reading the whole body first let
      one chunked request of any size fill the server's memory);
    - 408 when it has not arrived within its read timeout, apart from the scoring deadline that starts after it;
    - 503 when holding it would pass the budget of bytes held across all requests (a declared length is reserved
      whole at once).
    An upload (/v1/score-csv) is written to a temporary file as it arrives, handed to its route in the scope, and
    costs the budget nothing; any other body is handed on as it came."""

    def __init__(self, app, settings: ServeSettings, budget: ByteBudget, refused: Refused):
        self.app = app
        self.settings = settings
        self.budget = budget
        self.refused = refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if not takes_body(scope):
            if (declared not in (None, b"0")) or b"transfer-encoding" in headers:
                return await refuse(scope, send, 405, f"{scope['path']} takes no request body", self.refused)
            return await self.app(scope, receive, send)
        upload = scope["path"] == UPLOAD_PATH
        limit = self.settings.max_upload_bytes if upload else self.settings.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._too_large(scope, receive, send, limit)
        if upload:
            return await self._spooled(scope, receive, send, limit)
        await self._held(scope, receive, send, limit, int(declared) if declared is not None else None)

    async def _held(self, scope, receive, send, limit: int, declared: int | None) -> None:
        """A body kept in memory, its bytes taken from the budget: a declared length whole at once, a chunked body
        as it arrives."""
        held, client = declared or 0, client_address(scope)
        if not self.budget.take(held, client):
            return await self._over_budget(scope, send)
        try:
            messages = []
            try:
                async for message in self._messages(receive, limit, self.settings.body_timeout_s):
                    size = len(message.get("body", b""))
                    if declared is None:
                        if not self.budget.take(size, client):
                            return await self._over_budget(scope, send)
                        held += size
                    messages.append(message)
            except BodyTooLarge:
                return await self._too_large(scope, receive, send, limit)
            except asyncio.TimeoutError:
                return await self._late(scope, send, self.settings.body_timeout_s)

            async def replay():
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send)
        finally:
            self.budget.give(held, client)

    async def _spooled(self, scope, receive, send, limit: int) -> None:
        with tempfile.TemporaryFile() as body:
            try:
                async for message in self._messages(receive, limit, self.settings.upload_body_timeout_s):
                    body.write(message.get("body", b""))
            except BodyTooLarge:
                return await self._too_large(scope, receive, send, limit)
            except asyncio.TimeoutError:
                return await self._late(scope, send, self.settings.upload_body_timeout_s)
            body.seek(0)
            sent = False

            async def empty():
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}

            await self.app({**scope, UPLOAD_FILE: body}, empty, send)

    @staticmethod
    async def _messages(receive, limit: int, timeout: float):
        """The body's messages as they arrive, the whole body within `timeout` seconds and `limit` bytes."""
        deadline = asyncio.get_running_loop().time() + timeout
        size = 0
        while True:
            message = await receive_by(receive, deadline)
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge
            yield message
            if not message.get("more_body"):
                return

    async def _too_large(self, scope, receive, send, limit: int) -> None:
        """413. Reads on (up to a bound and the read timeout, keeping nothing) before answering: a client still
        sending when the server closes gets a connection reset instead of the 413 (Python's urllib and requests
        do)."""
        read, deadline = 0, asyncio.get_running_loop().time() + self.settings.body_timeout_s
        try:
            while read <= DRAIN_BYTES:
                message = await receive_by(receive, deadline)
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
                read += len(message.get("body", b""))
        except asyncio.TimeoutError:
            pass
        await refuse(scope, send, 413, f"request body over {limit:,} bytes", self.refused)

    async def _late(self, scope, send, timeout: float) -> None:
        await refuse(scope, send, 408, f"the request body did not arrive within {timeout:g} s", self.refused)

    async def _over_budget(self, scope, send) -> None:
        detail = (
            f"busy: {self.budget.held:,} bytes of request bodies held (at most {self.budget.limit:,}, and "
            f"{self.budget.per_client:,} from one address); try again"
        )
        await refuse(scope, send, 503, detail, self.refused, RETRY_AFTER)


async def receive_by(receive, deadline: float) -> dict:
    """The next ASGI message, or asyncio.TimeoutError at `deadline` (the event loop's clock)."""
    return await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0))


class InFlightLimit:
    """At most `limit` requests answered at once (the probes apart), counted once their body has arrived: one more
    gets 503 with Retry-After at once, instead of queueing without end."""

    def __init__(self, app, limit: int, refused: Refused):
        self.app = app
        self.limit = limit
        self.refused = refused
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES + ("/metrics",):
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            detail = f"busy: {self.active} requests in progress; try again"
            return await refuse(scope, send, 503, detail, self.refused, RETRY_AFTER)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
