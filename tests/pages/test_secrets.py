"""Fake keys and passwords set, every page opened: none of them appears on a page, in a
download or in the log."""

from __future__ import annotations

import logging

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.pages import run
from tests.helpers.servers import APP

SECRETS = {
    "LANGSMITH_API_KEY": "lsv2_pt_FAKEsecretLANGSMITH0123456789",
    "QDRANT_API_KEY": "FAKEsecretQDRANTkey987",
}
DB_PASSWORD = "FAKEsecretDBpassword42"
PAGES = [
    "pages/chat.py",
    "pages/cost.py",
    "pages/context.py",
    "pages/latency.py",
    "pages/conversation.py",
    "pages/review.py",
    "pages/feedback.py",
    "pages/users.py",
    "pages/audit.py",
]


def everything_shown(at: AppTest) -> str:
    """Every element the page drew, as its protobuf text (labels, values, help, options)."""
    parts: list[str] = []

    def walk(node: object) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_no_secret_on_any_page_or_in_the_log(
    demo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    # Postgres here trusts local connections, so the password is carried but never needed.
    monkeypatch.setenv("DATABASE_URL", db_url.replace("postgres@", f"postgres:{DB_PASSWORD}@"))
    # LangSmith is "configured" but unreachable: the sync fails and says so, without the key.
    monkeypatch.setenv("LANGSMITH_ENDPOINT", "http://127.0.0.1:9")
    caplog.set_level(logging.DEBUG)
    at = run(AppTest.from_file(APP, default_timeout=120))
    shown = [everything_shown(at)]
    for page in PAGES:
        at.switch_page(page)
        run(at)
        shown.append(everything_shown(at))
    at.switch_page("pages/feedback.py")
    run(at)
    shown.append(everything_shown(at))
    text = "\n".join(shown) + "\n" + caplog.text
    assert "Postgres (" in text  # the database is named, without its password
    for secret in [*SECRETS.values(), DB_PASSWORD]:
        assert secret not in text, secret
