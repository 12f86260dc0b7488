"""`critic serve`: the FastAPI app (app.py) under uvicorn, one copy of the model per worker process."""

from __future__ import annotations

import dataclasses
import json
import os

from critic.serve.app import create_app
from critic.serve.settings import ServeSettings

_MODEL_ENV, _SETTINGS_ENV, _BACKEND_ENV, _PRECISION_ENV = (
    "CRITIC_SERVE_MODEL",
    "CRITIC_SERVE_SETTINGS",
    "CRITIC_SERVE_BACKEND",
    "CRITIC_SERVE_PRECISION",
)


def app_from_environment():
    """The app for each uvicorn worker process (`--workers N`), configured through the environment."""
    from critic.inference.predict import Classifier

    settings = ServeSettings(**json.loads(os.environ.get(_SETTINGS_ENV, "{}")))
    classifier = Classifier.load(
        os.environ[_MODEL_ENV],
        backend=os.environ.get(_BACKEND_ENV, "auto"),
        precision=os.environ.get(_PRECISION_ENV, "auto"),
        serving=True,
    )
    return create_app(classifier, settings)


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    backend: str = "auto",
    precision: str = "auto",
    log_level: str = "info",
) -> None:
    import uvicorn

    settings = settings or ServeSettings()
    os.environ[_MODEL_ENV] = str(model)
    os.environ[_SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    os.environ[_BACKEND_ENV] = backend
    os.environ[_PRECISION_ENV] = precision
    uvicorn.run(
        "critic.serve.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.timeout_s) + 5,
    )
