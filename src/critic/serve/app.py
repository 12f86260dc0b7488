"""The HTTP API: FastAPI under uvicorn, with micro-batching, limits, an optional API key, Prometheus metrics and
a web page to try the model.

    POST /v1/predict     {"text": "..."} or {"texts": ["...", ...]} -> label and probabilities per text
                         (with "min_accuracy": 0.97, "unsure" below the threshold that shows it on validation)
    POST /v1/explain     {"text": "..."} -> the words that pushed the decision
    POST /v1/score-csv   a CSV body (text/csv) -> the same CSV with label and p_<label> columns
    GET  /healthz /readyz /metrics /openapi.json, and / (the page)
"""

import asyncio
import csv
import dataclasses
import functools
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from critic.inference.predict import score_columns, stage_names
from critic.modeling.abstention import answers
from critic.serve.batching import Busy, MicroBatcher, max_batch_for
from critic.serve.guards import (
    PAGE,
    RETRY_AFTER,
    UPLOAD_FILE,
    BodyLimit,
    ByteBudget,
    ClientCap,
    InFlightLimit,
    KeyCheck,
)
from critic.serve.metrics import Metrics
from critic.serve.settings import ServeSettings


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    stage: Literal["cheap", "model"] = Field(
        description="which stage answered: the cascade's cheap stage (where the model has one) or the model"
    )


class Threshold(BaseModel):
    target: float = Field(description="the min_accuracy asked for")
    threshold: float | None = Field(
        description="answers below this confidence are unsure; null: no threshold "
        "shows the target on the validation split, and every answer is unsure"
    )
    coverage: float = Field(description="the share of the validation reviews it answers")
    accuracy: float | None = Field(description="their accuracy")
    lower_bound: float | None = Field(description="the accuracy they show with 95% confidence (Clopper-Pearson)")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]
    min_accuracy: Threshold | None = Field(None, description="with min_accuracy: the threshold used")


class Word(BaseModel):
    word: str
    start: int
    end: int
    score: float | None = Field(description="-1..1 towards the label; null when the word was cut by the window")


class ExplainResponse(BaseModel):
    model: str
    label: str
    probability: float
    truncated: bool
    text: str
    words: list[Word]


class Problem(BaseModel):
    detail: str


# At least one character that is neither white space nor a control character: stricter than Python's idea of a
# blank string (str.strip also removes \x1c-\x1f and \x85), so a schema-valid text is never refused as empty.
NOT_BLANK = r"[^\s\x00-\x1f\x7f-\x9f]"


def request_models(settings: ServeSettings, labels: list[str]):
    """Request bodies whose schema states the server's limits and the model's classes, so that clients and fuzzers
    see them."""
    Text = Annotated[str, Field(min_length=1, max_length=settings.max_text_chars, pattern=NOT_BLANK)]

    class OneText(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Text = Field(description="one review")

    class Answering(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_accuracy: float | None = Field(
            None,
            gt=0,
            lt=1,
            description='answer "unsure" below the confidence at which the validation split shows this accuracy '
            "with 95% confidence, e.g. 0.97",
        )

    class OneToAnswer(OneText, Answering):
        pass

    class ManyTexts(Answering):
        texts: list[Text] = Field(min_length=1, max_length=settings.max_texts, description="several reviews")

    class ExplainText(OneText):
        label: Literal[tuple(labels)] | None = Field(  # type: ignore[valid-type]
            None, description="the class to explain (default: the predicted one)"
        )

    return OneToAnswer | ManyTexts, ExplainText


@dataclass
class Service:
    """What the routes share: the model, the limits, the micro-batcher and the metrics."""

    classifier: object
    settings: ServeSettings
    metrics: Metrics
    batcher: MicroBatcher
    recorder: object | None = None  # a recording.StoreRecorder: unsure answers to a labels store
    watch: object | None = None  # a watch.TrafficWatch: unsure share, class mix, drift of the traffic
    ready: bool = False

    @property
    def name(self) -> str:
        return self.classifier.name

    @property
    def version(self) -> str:
        return str(self.classifier.record.versions.get("critic", "unknown"))

    async def scored(self, texts: list[str], deadline: float):
        """(probabilities, whether the cascade's cheap stage gave each). Where the model has a cascade, its cheap
        stage answers first, in a worker thread, and what it is sure of does not wait for the model: only the rest
        go through the micro-batcher, so a review the cheap stage answers never waits behind a batch of hard ones."""
        answer_cheaply = self.classifier.cheap_answers  # without a cascade: zeros, and no text answered
        if self.classifier.cheap_stage is None:  # nothing to compute: no hop to a thread on the way to the model
            probs, cheap = answer_cheaply(texts)
        else:
            probs, cheap = await asyncio.to_thread(answer_cheaply, texts)
        rest = np.flatnonzero(~cheap)
        if len(rest):
            probs[rest] = await self.model_scored([texts[i] for i in rest], deadline)
        self.metrics.answered(cheap)
        return probs, cheap

    async def model_scored(self, texts: list[str], deadline: float) -> np.ndarray:
        """The model's probabilities from the micro-batcher, or a 504 at `deadline`; a request that gives up is
        cancelled in the queue, so the model never scores it."""
        try:
            return await asyncio.wait_for(self.batcher.submit(texts), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise HTTPException(504, "no answer in time; the server is busy, try again") from None
        except Busy as error:
            raise HTTPException(503, f"busy: {error}; try again", headers=RETRY_AFTER) from None

    async def exclusive(self, function, *args, deadline: float):
        """`function(*args)` in the model's thread, between batches, under the same rules as `scored`: 503 when too
        many such jobs wait, 504 at `deadline`, and a job whose request has given up is never started."""
        try:
            return await self.batcher.run_exclusive(function, *args, timeout=max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise HTTPException(504, "no answer in time; the server is busy, try again") from None
        except Busy as error:
            raise HTTPException(503, f"busy: {error}; try again", headers=RETRY_AFTER) from None


def batching_for(classifier, settings: ServeSettings) -> ServeSettings:
    """The settings with `max_batch` chosen for the classifier's backend and device where they leave it open."""
    if settings.max_batch is not None:
        return settings
    return dataclasses.replace(settings, max_batch=max_batch_for(classifier.backend, classifier.device.type))


def create_app(classifier, settings: ServeSettings | None = None, recorder=None, watch=None) -> FastAPI:
    """An app serving `classifier` (a critic.Classifier); with `recorder` (recording.StoreRecorder), its unsure
    answers and a sample of the others go to a labels store; with `watch` (watch.TrafficWatch), what it sees is in
    /metrics and at /v1/watch."""
    settings = batching_for(classifier, settings or ServeSettings())
    metrics = Metrics()
    service = Service(
        classifier,
        settings,
        metrics,
        MicroBatcher(
            classifier.model_proba,
            settings.max_batch,
            settings.max_wait_ms / 1000,
            on_batch=metrics.scored_batch,
            max_queued=settings.max_queued_texts,
            max_exclusive=settings.max_queued_explains,
        ),
        recorder,
        watch,
    )
    if recorder is not None:
        metrics.record_store(recorder)
    if watch is not None:
        watch.export(metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        if service.recorder is not None:
            service.recorder.start()
        service.ready = True
        yield
        service.ready = False
        await service.batcher.stop()  # finishes what is queued
        if service.recorder is not None:
            await asyncio.to_thread(service.recorder.stop)

    app = FastAPI(
        title="critic",
        version=service.version,
        lifespan=lifespan,
        description=f"Sentiment of reviews with the model '{service.name}' (labels: {', '.join(classifier.labels)}).",
    )
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(ValueError)(unscorable)
    app.include_router(api_router(service))
    if watch is not None:
        app.include_router(watch_router(service))
    app.include_router(probe_router(service))
    add_guards(app, settings, metrics)
    return app


def add_guards(app: FastAPI, settings: ServeSettings, metrics: Metrics) -> None:
    """The middleware, added from the inside out (each `add_middleware` wraps what is there): the deadline and the
    metrics innermost, then the guards (guards.py), then CORS (its preflight carries no key) and the Host check."""
    metrics.paths = {*app.openapi()["paths"], *PAGE, app.openapi_url, app.docs_url, app.redoc_url}
    # one address may hold a quarter of the budget, or one largest body where that is more
    budget = ByteBudget(settings.max_buffered_bytes, max(settings.max_buffered_bytes // 4, settings.max_body_bytes))
    metrics.body_bytes.set_function(lambda: budget.held)
    app.middleware("http")(deadline_and_metrics(settings, metrics))
    app.add_middleware(InFlightLimit, limit=settings.max_in_flight, refused=metrics.refused)
    app.add_middleware(BodyLimit, settings=settings, budget=budget, refused=metrics.refused)
    app.add_middleware(ClientCap, limit=settings.max_in_flight_per_client, refused=metrics.refused)
    app.add_middleware(KeyCheck, api_key=settings.api_key, refused=metrics.refused)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    if settings.allowed_hosts != ["*"]:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)


# The page runs only its own script and style (no inline code, so an injected tag cannot run) and cannot be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


SCORING_PATHS = ("/v1/predict", "/v1/explain", "/v1/score-csv")  # the in-flight gauge's labels, besides "other"


def deadline_and_metrics(settings: ServeSettings, metrics: Metrics):
    """A deadline under every request (504), the security headers on every answer, and the request metrics."""

    async def middleware(request: Request, call_next):
        started = time.perf_counter()
        # The endpoints keep their own deadlines and stop their work; this one is the net under them.
        timeout = (settings.upload_timeout_s if request.url.path == "/v1/score-csv" else settings.timeout_s) + 1
        in_flight = metrics.in_flight.labels(request.url.path if request.url.path in SCORING_PATHS else "other")
        in_flight.inc()
        try:
            response = await asyncio.wait_for(call_next(request), timeout)
        except asyncio.TimeoutError:
            response = JSONResponse({"detail": f"no answer within {timeout:g} s"}, status_code=504)
        finally:
            in_flight.dec()
        if request.url.path not in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # FastAPI's pages run inline code
            response.headers.update(SECURITY_HEADERS)
        path = request.scope.get("route").path if request.scope.get("route") else "other"
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    return middleware


async def invalid_request(request: Request, error: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
    return JSONResponse({"detail": problems}, status_code=422)


async def unscorable(request: Request, error: ValueError):
    return JSONResponse({"detail": str(error)}, status_code=422)


ERRORS = {
    401: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
    503: {"model": Problem},
    504: {"model": Problem},
}
CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {"type": "string", "description": "a CSV file with a header line and a column of reviews"}
            }
        },
    }
}


def api_router(service: Service) -> APIRouter:
    """/v1: predict, explain, score-csv; behind the API key when one is set."""
    settings, classifier = service.settings, service.classifier
    PredictRequest, ExplainRequest = request_models(settings, classifier.labels)
    # The key itself is checked by KeyCheck before a body is read; this only shows the header in the schema
    router = keyed_router("/v1", settings)

    @router.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> PredictResponse:
        texts = [body.text] if hasattr(body, "text") else body.texts
        if (characters := sum(map(len, texts))) > settings.max_request_chars:
            raise HTTPException(
                413,
                f"{characters:,} characters in this request; the limit is "
                f"{settings.max_request_chars:,} (send the texts in several requests)",
            )
        # Before scoring (a model without the record fails here), in a worker thread: a new target costs ms
        unsure_below = await asyncio.to_thread(classifier.unsure_below, body.min_accuracy)
        probs, cheap = await service.scored(texts, time.monotonic() + settings.timeout_s)
        answered = answers(probs, classifier.labels, unsure_below)
        if service.recorder is not None:
            service.recorder.answered(texts, answered, probs)
        if service.watch is not None:
            service.watch.answered(texts, probs)
        return PredictResponse(
            model=service.name,
            version=service.version,
            predictions=[
                Prediction(
                    label=label,
                    probabilities={name: float(v) for name, v in zip(classifier.labels, p)},
                    stage=stage,
                )
                for label, p, stage in zip(answered, probs, stage_names(cheap))
            ],
            min_accuracy=classifier.threshold(body.min_accuracy) if body.min_accuracy is not None else None,
        )

    @router.post("/explain", response_model=ExplainResponse)
    async def explain(body: ExplainRequest) -> ExplainResponse:
        from critic.inference.explain import explain as attribute

        deadline = time.monotonic() + settings.timeout_s
        result = await service.exclusive(
            functools.partial(attribute, target=body.label), classifier, body.text, deadline=deadline
        )
        return ExplainResponse(model=service.name, **result.as_dict())

    @router.post(
        "/score-csv", responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}, openapi_extra=CSV_BODY
    )
    async def score_csv(
        request: Request,
        text_column: str | None = None,
        min_accuracy: Annotated[float | None, Query(gt=0, lt=1)] = None,
    ) -> Response:
        deadline = time.monotonic() + settings.upload_timeout_s
        if not request.headers.get("content-type", "").startswith("text/csv"):
            # a cross-site form may POST text/plain without asking; text/csv needs the CORS preflight
            raise HTTPException(415, "send the CSV with Content-Type: text/csv")
        unsure_below = await asyncio.to_thread(classifier.unsure_below, min_accuracy)
        # In a worker thread, so that the event loop answers others (on it, a 20 MB upload stalled /healthz for 2.1 s)
        fields, rows, texts = await asyncio.to_thread(read_upload, request.scope[UPLOAD_FILE], text_column, settings)
        # In chunks through the same queue as single requests, which are answered between them; a client that
        # has gone (or a request past its deadline) stops the work at the next chunk. A chunk holds at least
        # UPLOAD_CHUNK texts whatever max_batch is (with 1, each text its own batch ran out the deadline).
        chunk = max(UPLOAD_CHUNK, settings.max_batch)
        parts = []
        for start in range(0, len(texts), chunk):
            if await request.is_disconnected():
                return Response(status_code=499)
            parts.append(await service.scored(texts[start : start + chunk], deadline))
        probs, cheap = (np.concatenate(part) for part in zip(*parts))
        stages = cheap if classifier.cheap_stage is not None else None
        scored = await asyncio.to_thread(scored_csv, fields, rows, probs, classifier.labels, unsure_below, stages)
        return Response(
            scored, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="scored.csv"'}
        )

    return router


UPLOAD_CHUNK = 32


def watch_router(service: Service) -> APIRouter:
    """GET /v1/watch (behind the key, like /v1): what the server has seen."""
    router = keyed_router("/v1", service.settings)

    @router.get("/watch", response_model=dict)
    async def watch() -> dict:
        """The share of recent answers that are unsure, their class mix against validation's, the drift."""
        return service.watch.state()

    return router


def scored_csv(
    fields: list[str], rows: list[list[str]], probs: np.ndarray, labels: list[str], unsure_below, cheap=None
) -> str:
    """The uploaded rows with their answer and probabilities (and, with `cheap`, the stage that answered each), as
    CSV that a spreadsheet opens without running it."""
    from critic.safe_csv import SafeWriter

    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(fields + score_columns(labels, taken=fields, stage=cheap is not None))
    stages = [[stage] for stage in stage_names(cheap)] if cheap is not None else [[]] * len(rows)
    writer.writerows(
        row + [label, *(round(float(value), 6) for value in p)] + stage
        for row, label, p, stage in zip(rows, answers(probs, labels, unsure_below), probs, stages)
    )
    return out.getvalue()


def keyed_router(prefix: str, settings: ServeSettings) -> APIRouter:
    """A router under `prefix` whose schema shows the X-API-Key header when a key is set (KeyCheck checks it,
    before a body is read)."""
    documented_key = [Depends(APIKeyHeader(name="X-API-Key", auto_error=False))] if settings.api_key else []
    return APIRouter(prefix=prefix, dependencies=documented_key, responses=ERRORS)


def add_page(router: APIRouter, page_file: str, script_file: str) -> None:
    """The page at / with its script and the shared style, read once from serve/static (open without the key:
    guards.PAGE)."""
    static = resources.files("critic.serve").joinpath("static")
    page, script, style = (
        static.joinpath(name).read_text(encoding="utf-8") for name in (page_file, script_file, "page.css")
    )

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/page.js", include_in_schema=False)
    async def page_script() -> Response:
        return Response(script, media_type="text/javascript")

    @router.get("/page.css", include_in_schema=False)
    async def page_style() -> Response:
        return Response(style, media_type="text/css")


def probe_router(service: Service) -> APIRouter:
    """Liveness, readiness, metrics, and the page; with an API key set, the metrics need it (KeyCheck)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    router = APIRouter()
    add_page(router, "index.html", "page.js")

    @router.get("/healthz", response_model=dict)
    async def healthz() -> dict:
        return {"status": "alive"}

    @router.get("/readyz", response_model=dict, responses={503: {"model": Problem}})
    async def readyz() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"detail": "model not loaded"}, status_code=503)
        if service.settings.api_key:  # open to probes without the key, so it names nothing
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "ready", "model": service.name, "backend": service.classifier.backend})

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


MAX_HEADER_BYTES = 64 << 10  # an upload's first line; a 1.5 M-column header cost +544 MB to parse before


def read_upload(body, text_column: str | None, settings: ServeSettings) -> tuple[list[str], list[list[str]], list[str]]:
    """(column names, rows, texts) of an uploaded CSV (`body`: a binary file), or an HTTP error naming the row and
    the problem."""
    from critic.data import TEXT_COLUMNS, DataError, pick_column

    if len(body.readline(MAX_HEADER_BYTES + 1)) > MAX_HEADER_BYTES:
        raise HTTPException(413, f"the CSV's first line is over {MAX_HEADER_BYTES:,} bytes")
    body.seek(0)
    reader = csv.reader(io.TextIOWrapper(body, encoding="utf-8", newline=""))
    try:
        fields = next(reader, [])
        if len(fields) > settings.max_upload_columns:
            raise HTTPException(
                413, f"{len(fields):,} columns; the limit is {settings.max_upload_columns:,} per upload"
            )
        rows = upload_rows(reader, len(fields), settings)
    except (UnicodeDecodeError, csv.Error) as error:
        raise HTTPException(422, f"not a UTF-8 CSV file: {error}") from None
    if not fields:
        raise HTTPException(422, "the CSV's first line must name its columns")
    if not rows:
        raise HTTPException(422, "the CSV has no rows")
    try:
        key = pick_column(fields, text_column, TEXT_COLUMNS, "text", "upload")
    except DataError as error:
        raise HTTPException(422, str(error).replace("--text-column", "?text_column=")) from None
    texts = [row[fields.index(key)] for row in rows]
    check_texts(texts, key, settings)
    return fields, rows, texts


def upload_rows(reader, width: int, settings: ServeSettings) -> list[list[str]]:
    """The rows, each cut or padded to the header's width, read one at a time up to the limit + 1: a body of many
    short rows would otherwise become millions of rows first (a 19.8 MB body of one-letter rows took 2.0 GB before
    its 413)."""
    rows = []
    for row in reader:
        rows.append((row + [""] * width)[:width])
        if len(rows) > settings.max_upload_rows:
            raise HTTPException(
                413,
                f"more than {settings.max_upload_rows:,} rows; the limit is {settings.max_upload_rows:,} per upload "
                f"(`critic predict --file` scores files of any size)",
            )
    return rows


def check_texts(texts: list[str], key: str, settings: ServeSettings) -> None:
    """Every text scorable and within its limit, and all of them within the upload's (an HTTP error otherwise)."""
    from critic.data import text_problem

    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise HTTPException(422, f"row {i + 1}: {problem} (column {key!r})")
        if len(text) > settings.max_text_chars:
            raise HTTPException(422, f"row {i + 1}: {len(text):,} characters; the limit is {settings.max_text_chars:,}")
    if (characters := sum(map(len, texts))) > settings.max_upload_chars:
        raise HTTPException(
            413,
            f"{characters:,} characters in column {key!r}; the limit is {settings.max_upload_chars:,} per upload "
            f"(send several uploads; `critic predict --file` scores files of any size)",
        )
