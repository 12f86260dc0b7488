"""Serving: the HTTP app (app.py: routes around a Service, limits, metrics, the page), its micro-batcher
(batching.py) and uvicorn around it (server.py)."""

from critic.serve.app import ServeSettings, create_app
from critic.serve.server import app_from_environment, serve

__all__ = ["ServeSettings", "create_app", "serve", "app_from_environment"]
