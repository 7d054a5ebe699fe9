"""Error reporting: SENTRY_DSN starts sentry-sdk in the UI process and in the API process."""

from __future__ import annotations

import logging
import threading

from data.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, object] = {"dsn": None, "processes": set()}


def init_sentry(settings: Settings, process: str) -> bool:
    """Start sentry-sdk once per process when SENTRY_DSN is set; True when it is on.

    `process` ("ui" or "api") becomes the `process` tag on every event, so one Sentry project
    tells the two apart ("api+ui" when `python app.py` serves both from one process). No
    personal data by default (send_default_pii=False: no user IP, no cookies, no request
    bodies), no local variables (they may hold messages and keys): events carry the stack, not
    the conversation. Tracing stays off unless SENTRY_TRACES_SAMPLE_RATE is above 0."""
    if settings.sentry_dsn is None:
        return False
    dsn = settings.sentry_dsn.get_secret_value()
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    with _lock:
        processes: set[str] = _state["processes"]  # type: ignore[assignment]
        if _state["dsn"] != dsn:
            sentry_sdk.init(
                dsn=dsn,
                environment=settings.environment,
                send_default_pii=False,
                include_local_variables=False,
                max_request_body_size="never",
                traces_sample_rate=settings.sentry_traces_sample_rate,
                integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
            )
            _state["dsn"] = dsn
            processes.clear()
            log.info("Sentry error reporting on")
        processes.add(process)
        sentry_sdk.get_global_scope().set_tag("process", "+".join(sorted(processes)))
    return True
