"""`critic label`: the labelling server. The page at / asks a person for one review at a time; a script drives the
same loop through the API, behind the server's key like every route:

    GET  /v1/label/next?n=K   reviews to label: id, text, the model's suggestion and confidence, why it was picked
    POST /v1/label            {"id", "label", "annotator"} -> 200 once the label is committed
    POST /v1/label/undo       {"label_id", "annotator"} -> the label taken back (it stays in the history)
    POST /v1/label/retrain    start training the next model from the labels
    GET  /v1/label/status     labels per class, the current model and its accuracy estimate, the retrain
    GET  /v1/label/why?id=K   the words that pushed the model's suggestion for a review
"""

import asyncio
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from critic.data.store import StoreError
from critic.labelling.session import LabelSession
from critic.serve.app import add_guards, add_page, invalid_request, keyed_router
from critic.serve.metrics import Metrics
from critic.serve.settings import ServeSettings

Annotator = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
RowId = Annotated[int, Field(ge=1, le=2**62)]  # a database row's id (SQLite's integers stop at 2**63)


class ToLabel(BaseModel):
    id: int
    text: str
    suggestion: str | None = Field(description="the current model's answer; null without a model")
    confidence: float | None
    probabilities: dict[str, float] | None
    reason: str = Field(
        description=(
            "why it was picked: uncertain, uncertain and typical, rare class …, random, diverse start, "
            "unsure in serving"
        )
    )


class Given(BaseModel):
    label_id: int
    review_id: int
    committed: bool = True


def request_models(labels: list[str]):
    from typing import Literal

    class LabelRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: RowId = Field(description="the review's id, from /v1/label/next")
        label: Literal[tuple(labels)] = Field(description="one of the store's classes")  # type: ignore[valid-type]
        annotator: Annotator

    class UndoRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        label_id: RowId
        annotator: Annotator

    return LabelRequest, UndoRequest


def create_label_app(session: LabelSession, settings: ServeSettings | None = None) -> FastAPI:
    """The labelling app around a started session (its store held by this process)."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        session.wait(timeout=0)

    app = FastAPI(
        title="critic label",
        lifespan=lifespan,
        description=f"Label reviews as {', '.join(session.store.labels)}, those that teach the model most first.",
    )
    app.exception_handler(RequestValidationError)(invalid_request)
    app.include_router(label_router(session, settings))
    app.include_router(page_router(session, metrics))
    add_guards(app, settings, metrics)
    return app


def label_router(session: LabelSession, settings: ServeSettings) -> APIRouter:
    """/v1/label/…, behind the server's key: the labelling routes and the model's."""
    router = keyed_router("/v1/label", settings)
    add_labelling_routes(router, session)
    add_model_routes(router, session, settings)
    return router


def add_labelling_routes(router: APIRouter, session: LabelSession) -> None:
    """next, a label, undo."""
    LabelRequest, UndoRequest = request_models(list(session.store.labels))

    @router.get("/next", response_model=list[ToLabel])
    async def next_reviews(n: Annotated[int, Query(ge=1, le=100)] = 1) -> list[ToLabel]:
        return [ToLabel(**item) for item in await asyncio.to_thread(session.next, n)]

    @router.post("/", response_model=Given, include_in_schema=False)
    @router.post("", response_model=Given)
    async def give(body: LabelRequest) -> Given:
        try:  # committed (and synced) before the answer leaves
            label_id = await asyncio.to_thread(session.label, body.id, body.label, body.annotator)
        except StoreError as error:
            raise HTTPException(404 if "no review" in str(error) else 422, str(error)) from None
        return Given(label_id=label_id, review_id=body.id)

    @router.post("/undo", response_model=dict)
    async def undo(body: UndoRequest) -> dict:
        try:
            undo_id = await asyncio.to_thread(session.undo, body.label_id, body.annotator)
        except StoreError as error:
            raise HTTPException(422, str(error)) from None
        return {"undone": body.label_id, "undo_id": undo_id}


def add_model_routes(router: APIRouter, session: LabelSession, settings: ServeSettings) -> None:
    """why the model suggests what it does, a retrain, the status."""

    @router.get("/why", response_model=dict | None)
    async def why(id: Annotated[int, Query(ge=1, le=2**62)]) -> dict | None:
        if await asyncio.to_thread(session.store.review, id) is None:
            raise HTTPException(404, f"no review {id}")
        try:
            return await asyncio.wait_for(asyncio.to_thread(session.why, id), settings.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, "no explanation in time; the server is busy") from None

    @router.post("/retrain", response_model=dict)
    async def retrain() -> dict:
        started = await asyncio.to_thread(session.retrain)
        return {"started": started, "round": session.retraining.round}

    @router.get("/status", response_model=dict)
    async def status() -> dict:
        return await asyncio.to_thread(session.status)


def page_router(session: LabelSession, metrics: Metrics) -> APIRouter:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    router = APIRouter()
    add_page(router, "label.html", "label.js")

    @router.get("/healthz", response_model=dict)
    async def healthz() -> dict:
        return {"status": "alive"}

    @router.get("/readyz", response_model=dict)
    async def readyz() -> dict:
        return {"status": "ready"}

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def sqlalchemy_url(url: str):
    from sqlalchemy.engine import make_url

    return make_url(url)


def loop_settings(args):
    """The loop's settings from `critic label`'s flags."""
    from critic.labelling.session import LoopSettings

    return LoopSettings(
        base_model=args.base_model,
        retrain_every=args.retrain_every,
        batch=args.batch,
        pool_sample=args.pool_sample,
        models=args.models,
        train_args=args.train_arg,
    )


def run_labelling(args, columns, api_key: str | None, say) -> None:
    """`critic label`: the store opened and held, the file imported, the session started, the server run."""
    import uvicorn

    from critic.data.reading import LABEL_NAMES
    from critic.data.store import Store
    from critic.labelling.session import POOL_LONG_REVIEWS
    from critic.serve.server import bound_to

    if "://" in args.store and sqlalchemy_url(args.store).password:
        raise ValueError(
            "keep the password out of the store's URL (PGPASSWORD or ~/.pgpass for PostgreSQL): the URL travels "
            "on the command line of each retrain, where other users of the machine can read it"
        )
    store = Store(args.store, create=True, labels=columns.labels)
    store.hold("critic label")  # a second labelling server stops here, naming this process
    if args.data:
        say(store.import_file(args.data, columns).describe())
    classifier = None
    if args.model:
        from critic.inference.predict import Classifier

        classifier = Classifier.load(args.model, long_reviews=POOL_LONG_REVIEWS)
        store.set_labels(classifier.labels)
    if not store.labels:
        store.set_labels(LABEL_NAMES)
        say(f"labels: {', '.join(LABEL_NAMES)} (name others with --labels)")
    session = LabelSession(store, classifier, loop_settings(args))
    say(f"{len(store.unlabelled_ids()):,} reviews to label; planning the first batch")
    session.start()
    serve_settings = bound_to(args.host, ServeSettings(api_key=api_key))
    say(f"labelling page on http://{args.host}:{args.port}/ (store {args.store})")
    uvicorn.run(
        create_label_app(session, serve_settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=int(serve_settings.timeout_s) + 5,  # an explanation in flight, then it stops
    )
