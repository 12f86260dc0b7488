"""The guards in front of the app, as pure ASGI middleware: what a request may hold before a route sees it."""

from fastapi.responses import JSONResponse

from critic.serve.settings import ServeSettings

RETRY_AFTER = {"Retry-After": "1"}
DRAIN_BYTES = 64 << 20  # read at most this much of a refused body before answering 413 (then the connection closes)


class BodyLimit:
    """Counts a request's body while it streams in and answers 413 at its limit + 1 byte, whether or not the body
    declares its length, before the API key is checked or a route reads it; a body within the limit is handed on
    as it came. (Reading the whole body first let one chunked request of any size fill the server's memory.)"""

    def __init__(self, app, settings: ServeSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.settings.max_upload_bytes if scope["path"] == "/v1/score-csv" else self.settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(scope, receive, send, limit)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _refuse(scope, receive, send, limit)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class InFlightLimit:
    """At most `limit` requests answered at once (the probes apart): one more gets 503 with Retry-After at once,
    before its body is read, instead of queueing without end."""

    PROBES = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.PROBES:
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            busy = JSONResponse(
                {"detail": f"busy: {self.active} requests in progress; try again"}, status_code=503, headers=RETRY_AFTER
            )
            return await busy(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _refuse(scope, receive, send, limit: int) -> None:
    """413. Reads on (up to a bound, keeping nothing) before answering: a client still sending when the server
    closes gets a connection reset instead of the 413 (Python's urllib and requests do)."""
    read = 0
    while read <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
        read += len(message.get("body", b""))
    await JSONResponse(
        {"detail": f"request body over {limit:,} bytes"}, status_code=413, headers={"Connection": "close"}
    )(scope, receive, send)
