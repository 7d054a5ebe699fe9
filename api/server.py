"""Serving the API with uvicorn: alone (`python -m api`) or in a thread beside the UI
(`python app.py`), with the bind check and a graceful stop on SIGTERM."""

from __future__ import annotations

import logging
import threading

import uvicorn

from data.config.settings import Settings

log = logging.getLogger(__name__)


class BindRefused(RuntimeError):
    """The API would listen beyond this machine without any API key."""


def check_bind(settings: Settings) -> None:
    if not settings.api_keys and not settings.api_is_loopback:
        raise BindRefused(
            f"refusing to serve the API on {settings.api_host} without API_KEYS: set API_KEYS, "
            "or API_HOST=127.0.0.1"
        )


def make_server(settings: Settings, *, app: object | None = None) -> uvicorn.Server:
    """A uvicorn server for the API. On SIGTERM it stops accepting and lets turns in flight
    finish for up to SHUTDOWN_GRACE_S (a rolling deploy loses no turn)."""
    check_bind(settings)
    config = uvicorn.Config(
        app or "api.main:app",
        host=settings.api_host,
        port=settings.api_port,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def serve_in_thread(server: uvicorn.Server) -> threading.Thread:
    """Run `server` on a thread of its own (uvicorn then installs no signal handlers; the
    caller stops it with `stop`)."""
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    return thread


def stop(server: uvicorn.Server, thread: threading.Thread, grace_s: float) -> None:
    """Stop accepting, wait for requests in flight (up to `grace_s`), then return."""
    server.should_exit = True
    thread.join(timeout=grace_s + 5)
