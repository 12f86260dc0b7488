"""`critic serve`: the FastAPI app (app.py) under uvicorn, one copy of the model per worker process."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

from critic.messages import to_stderr
from critic.serve.app import batching_for, create_app
from critic.serve.settings import ServeSettings

_MODEL_ENV, _SETTINGS_ENV, _BACKEND_ENV, _PRECISION_ENV, _KEY_FILE_ENV = (
    "CRITIC_SERVE_MODEL",
    "CRITIC_SERVE_SETTINGS",
    "CRITIC_SERVE_BACKEND",
    "CRITIC_SERVE_PRECISION",
    "CRITIC_SERVE_KEY_FILE",
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def app_from_environment():
    """The app for each uvicorn worker process (`--workers N`), configured through the environment; the API key
    comes from a file only the user can read, never from the environment itself."""
    settings = ServeSettings(**json.loads(os.environ.get(_SETTINGS_ENV, "{}")))
    if os.environ.get(_KEY_FILE_ENV):
        with open(os.environ[_KEY_FILE_ENV], encoding="utf-8") as handle:
            settings.api_key = handle.read()
    return app_for(
        os.environ[_MODEL_ENV], settings, os.environ.get(_BACKEND_ENV, "auto"), os.environ.get(_PRECISION_ENV, "auto")
    )


def app_for(model: str, settings: ServeSettings, backend: str, precision: str):
    from critic.inference.predict import Classifier

    classifier = Classifier.load(model, backend=backend, precision=precision, serving=True, cascade=settings.cascade)
    settings = batching_for(classifier, settings)
    batching = (
        "off" if settings.max_batch == 1 else f"up to {settings.max_batch} texts, wait {settings.max_wait_ms:g} ms"
    )
    to_stderr(f"{classifier.name}: backend {classifier.backend}, micro-batching {batching}")
    return create_app(classifier, settings, recorder_for(classifier, settings), watch_for(classifier, settings))


def watch_for(classifier, settings: ServeSettings):
    """The watch on the traffic, with the model's reference embeddings when it scores drift."""
    if not settings.watch:
        return None
    from critic.inference import monitoring
    from critic.messages import to_stderr
    from critic.serve.watch import TrafficWatch

    reference = None
    if settings.watch_drift_every and classifier.path is not None:
        reference = monitoring.reference_embeddings(classifier, classifier.path, to_stderr)
    return TrafficWatch(classifier, settings.watch_min_accuracy, settings.watch_drift_every, reference)


def recorder_for(classifier, settings: ServeSettings):
    """The recorder of unsure answers, when the settings name a labels store (whose classes must be the model's)."""
    if settings.store is None:
        return None
    from critic.data.store import Store
    from critic.serve.recording import StoreRecorder

    store = Store(settings.store, create=True, labels=classifier.labels)  # an error if it labels other classes
    unsure_below = classifier.unsure_below(settings.store_min_accuracy)
    return StoreRecorder(store, classifier.name, classifier.labels, unsure_below, settings.store_sample)


def bound_to(host: str, settings: ServeSettings) -> ServeSettings:
    """The settings for a server listening on `host`: on a loopback address, unless the user named Host names, it
    answers only the names that point at it (a page on another site cannot reach it through DNS rebinding)."""
    if host in LOOPBACK and settings.allowed_hosts == ["*"]:
        return dataclasses.replace(settings, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    return settings


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

    settings = bound_to(host, settings or ServeSettings())
    options = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(settings.timeout_s) + 5)
    if workers == 1:  # the app built here: nothing travels through the environment
        return uvicorn.run(app_for(str(model), settings, backend, precision), **options)
    with tempfile.NamedTemporaryFile("w", prefix="critic-key-", encoding="utf-8") as key_file:  # mode 0600
        key_file.write(settings.api_key or "")
        key_file.flush()
        os.environ.update(
            {
                _MODEL_ENV: str(model),
                _SETTINGS_ENV: json.dumps(dataclasses.asdict(dataclasses.replace(settings, api_key=None))),
                _BACKEND_ENV: backend,
                _PRECISION_ENV: precision,
                **({_KEY_FILE_ENV: key_file.name} if settings.api_key else {}),
            }
        )
        uvicorn.run("critic.serve.server:app_from_environment", factory=True, workers=workers, **options)
