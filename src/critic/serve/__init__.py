"""Serving: the HTTP app (app.py: routes around a Service, metrics, the page), its settings (settings.py), the guards
in front of it (guards.py), its micro-batcher (batching.py) and uvicorn around it (server.py).

The names below load on first use, so that `critic serve --help` (which reads settings.py) imports no torch."""

__all__ = ["ServeSettings", "create_app", "serve", "app_from_environment"]


def __getattr__(name: str):
    if name == "ServeSettings":
        from critic.serve.settings import ServeSettings

        return ServeSettings
    if name == "create_app":
        from critic.serve.app import create_app

        return create_app
    if name in ("serve", "app_from_environment"):
        from critic.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'critic.serve' has no attribute {name!r}")
