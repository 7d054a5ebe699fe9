"""Error reporting: SENTRY_DSN starts sentry-sdk in the UI process and in the API process."""

from __future__ import annotations

import logging
import threading

from data.config.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, object] = {"dsn": None, "processes": set()}


def init_sentry(settings: Settings, process: str) -> bool:
    """Start sentry-sdk once per process when SENTRY_DSN is set; True when it is on.

    `process` ("ui" or "api") becomes the `process` tag on every event, so one Sentry project
    tells the two apart ("api+ui" when `python app.py` serves both from one process). No
    personal data (the send_default_pii=False set, as data_collection): events carry the stack,
    not the conversation. Tracing stays off unless SENTRY_TRACES_SAMPLE_RATE is above 0."""
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
                # What send_default_pii=False means, spelled out with the option that replaces
                # it in sentry-sdk 2.x (send_default_pii is deprecated there), and stricter:
                # no user identity, cookies, bodies, prompts or answers (the SDK's LangChain
                # and OpenAI integrations would otherwise attach them), SQL parameters, or
                # local variables.
                data_collection={
                    "user_info": False,
                    "cookies": {"mode": "off"},
                    "http_bodies": [],
                    "url_query_params": {"mode": "off"},
                    "gen_ai": {"inputs": False, "outputs": False},
                    "database_query_data": False,
                    "queues": False,
                    "stack_frame_variables": False,
                },
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
