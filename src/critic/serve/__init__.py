"""Serving: the HTTP app (app.py: routes around a Service, metrics, the page), its settings (settings.py), the
guards in front of it (guards.py), its micro-batcher
(batching.py) and uvicorn around it (server.py)."""

from critic.serve.app import create_app
from critic.serve.server import app_from_environment, serve
from critic.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve", "app_from_environment"]
