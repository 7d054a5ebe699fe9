"""Sign-in, roles and hostile input in headless Chromium, against `python app.py` (what
`make run` does) and plain `streamlit run app.py` (a fresh process starts in Streamlit's legacy
pages/ mode): direct URLs to forbidden pages, page files around the router, and a payload corpus
in chat, comments, URL parameters and imported data, watching for dialogs and outside
requests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from data.access import auth
from data.store.db import make_engine
from data.store.feedback import set_thumbs
from data.store.migrate import upgrade
from data.workflows import review
from tests.helpers.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, served_app
from tests.helpers.hostile import JS_PROBE, OUTSIDE, PAYLOADS, URL_PARAMS, import_hostile
from tests.helpers.servers import ROOT

pytestmark = pytest.mark.browser
PASSWORD = "browser test password"
ROLES = ("admin", "analyst", "reviewer", "tester")
# Every URL a visitor could type: the router's paths and the page files' own names (which the
# legacy pages/ mode would serve), plus helper modules and a path that exists nowhere.
ROUTER_PATHS = [
    "",
    "support-chat",
    "costs",
    "context-window",
    "latency-report",
    "conversation-view?session=x",
    "review-queue",
    "feedback-report",
    "users",
    "audit-log",
]
FILE_PATHS = ["cost", "chat", "conversation", "review", "feedback", "audit", "common", "charts"]
HEADINGS = {
    "support-chat": "Support chat",
    "costs": "Token cost",
    "context-window": "Context window",
    "latency-report": "Latency",
    "conversation-view": "Conversation",
    "review-queue": "Review",
    "feedback-report": "Feedback",
    "users": "Users",
    "audit-log": "Audit log",
}
ALLOWED = {
    "admin": set(HEADINGS),
    "analyst": {
        "costs",
        "context-window",
        "latency-report",
        "conversation-view",
        "feedback-report",
    },
    "reviewer": {"review-queue"},
    "tester": {"support-chat"},
}


def serve(data_dir: Path, command: list[str], local_model_port: int) -> Iterator[str]:
    upgrade_and_users(data_dir)
    env = {
        "LOCAL_MODEL_PORT": str(local_model_port),
        # Secrets that must never reach a page or the log.
        "LANGSMITH_API_KEY": "lsv2_fake_SECRET_langsmith_key_0123",
        "QDRANT_API_KEY": "qdrant_fake_SECRET_key_4567",
    }
    with served_app(data_dir, env, command=command) as base:
        yield base
    text = (data_dir / "streamlit.log").read_text(errors="replace")
    assert "SECRET" not in text and PASSWORD not in text, "a secret reached the server log"


def upgrade_and_users(data_dir: Path) -> str:
    url = f"sqlite:///{data_dir / 'agent_chatbase.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    for role in ROLES:
        auth.add_user(
            engine=engine, actor="test", username=f"{role}1", role=role, password=PASSWORD
        )
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("make-run")


@pytest.fixture(scope="module")
def make_run(run_dir: Path, local_model_port: int) -> Iterator[str]:
    yield from serve(run_dir, [sys.executable, str(ROOT / "app.py")], local_model_port)


@pytest.fixture(scope="module")
def streamlit_run(tmp_path_factory: pytest.TempPathFactory, local_model_port: int) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("streamlit-run")
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    yield from serve(data_dir, command, local_model_port)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser context per test: each page in it is a fresh Streamlit session (sign-in lives
    in the session, not in a cookie), while the context's HTTP cache keeps Streamlit's static
    bundle, so a visit does not download and parse it again."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context
    context.close()


class Watched:
    """A fresh page that records dialogs (alert, confirm) and requests to other hosts."""

    def __init__(self, context: BrowserContext) -> None:
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.outside: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("request", self._request)

    def _dialog(self, dialog) -> None:  # type: ignore[no-untyped-def]
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _request(self, request) -> None:  # type: ignore[no-untyped-def]
        host = urlparse(request.url).hostname
        if request.url.startswith(("http", "ws")) and host not in ("127.0.0.1", "localhost"):
            self.outside.append(request.url)

    def check(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.outside == [], self.outside
        page = self.page
        assert page.evaluate(JS_PROBE) is None, "markup from a payload is in the page"
        assert page.locator(f"img[src*='{OUTSIDE}']").count() == 0
        assert page.locator("a[href^='javascript' i]").count() == 0
        assert "Traceback" not in page.inner_text("body")

    def close(self) -> None:
        self.page.close()


def sign_in(page: Page, name: str) -> None:
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0, timeout=30_000)


@pytest.mark.parametrize("server", ["streamlit_run", "make_run"])
def test_no_page_file_is_served_around_the_router(
    server: str, context: BrowserContext, request: pytest.FixtureRequest
) -> None:
    """The first request to a fresh `streamlit run` process names a page file (legacy mode):
    the sign-in form answers, not the page; then the other page files' names there, and on the
    served app two of them and every router URL (past the first request both servers run the
    same router)."""
    base = request.getfixturevalue(server)
    paths = FILE_PATHS if server == "streamlit_run" else FILE_PATHS[:2] + ROUTER_PATHS
    for path in paths:
        watched = Watched(context)
        page = watched.page
        page.goto(f"{base}/{path}")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
        for heading in HEADINGS.values():
            expect(page.get_by_role("heading", name=heading, exact=True)).to_have_count(0)
        watched.check()
        watched.close()


def test_every_page_is_refused_to_some_role_here() -> None:
    refused = set()
    for role in ROLES[1:]:
        forbidden = [p for p in HEADINGS if p not in ALLOWED[role]]
        refused |= set({"reviewer": forbidden[:4], "tester": forbidden[3:]}.get(role, forbidden))
    assert refused == set(HEADINGS)


@pytest.mark.parametrize("role", ROLES)
def test_direct_urls_per_role(make_run: str, context: BrowserContext, role: str) -> None:
    """Pages typed as URLs: every page for admin (each URL names its page), and for the other
    roles their first page and pages they may not open: all of the analyst's, and between the
    reviewer and the tester every page, so each page is refused to someone here. The AppTest
    role matrix checks every role against every page."""
    allowed = [p for p in HEADINGS if p in ALLOWED[role]]
    forbidden = [p for p in HEADINGS if p not in ALLOWED[role]]
    forbidden = {"reviewer": forbidden[:4], "tester": forbidden[3:]}.get(role, forbidden)
    visits = list(HEADINGS) if role == "admin" else [allowed[0], *forbidden]
    for path in visits:
        watched = Watched(context)
        page = watched.page
        page.goto(f"{make_run}/{path}")
        sign_in(page, f"{role}1")
        if path in ALLOWED[role]:
            expect(page.get_by_role("heading", name=HEADINGS[path], exact=True)).to_be_visible(
                timeout=30_000
            )
            expect(page.get_by_text("Page not found")).to_have_count(0)
        else:
            expect(page.get_by_role("heading", name="Not allowed")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(f"You are signed in as {role}1")).to_be_visible()
            expect(page.get_by_role("heading", name=HEADINGS[path], exact=True)).to_have_count(0)
        # The navigation lists only this role's pages.
        nav = page.get_by_test_id("stSidebarNav")
        for other, heading in HEADINGS.items():
            link = nav.get_by_role("link", name=heading.replace("Token cost", "Cost"), exact=True)
            if other not in ALLOWED[role] or other == "conversation-view":
                expect(link).to_have_count(0)
        watched.check()
        if path == "costs" and role == "analyst":
            page.screenshot(path=str(ARTIFACTS / "analyst-sidebar.png"), full_page=True)
        watched.close()


def test_sign_in_page_screenshot(make_run: str, context: BrowserContext) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched = Watched(context)
    watched.page.goto(f"{make_run}/costs")
    expect(watched.page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    watched.page.screenshot(path=str(ARTIFACTS / "sign-in.png"), full_page=True)
    watched.page.get_by_role("textbox", name="User name").fill("analyst1")
    watched.page.get_by_role("textbox", name="Password").fill("wrong password here")
    watched.page.get_by_role("button", name="Sign in", exact=True).click()
    expect(watched.page.get_by_text(auth.WRONG)).to_be_visible(timeout=30_000)
    watched.check()
    watched.close()


def test_payload_corpus_stays_inert(make_run: str, run_dir: Path, context: BrowserContext) -> None:
    engine = make_engine(f"sqlite:///{run_dir / 'agent_chatbase.sqlite3'}")
    answers = import_hostile(engine, session_id="hostile-b", user_id="cust")
    for message_id, comment in zip(answers, [p for p in PAYLOADS if p.strip()], strict=False):
        set_thumbs(
            engine=engine,
            message_id=message_id,
            user_id="cust",
            score=0,
            comment=comment[:2000],
            sync_enabled=False,
        )
    review.enqueue(engine=engine, session_ids=["hostile-b"], reviews_required=1, created_by="x")
    engine.dispose()
    watched = Watched(context)
    page = watched.page
    # Imported data on the conversation page.
    page.goto(f"{make_run}/conversation-view?session=hostile-b")
    sign_in(page, "admin1")
    expect(page.get_by_text(PAYLOADS[0]).first).to_be_visible(timeout=30_000)
    page.get_by_text("memories used").first.click()
    page.wait_for_timeout(500)
    watched.check()
    page.screenshot(path=str(ARTIFACTS / "hostile-conversation.png"), full_page=True)
    # The review viewer with the customers' comments, and a payload as the reviewer's comment.
    page.goto(f"{make_run}/review-queue")
    sign_in(page, "reviewer1")
    page.get_by_role("button", name="Claim next").click()
    messages = page.get_by_test_id("stChatMessage")
    expect(messages.filter(has_text=PAYLOADS[2]).first).to_be_visible(timeout=30_000)
    page.get_by_test_id("stRadio").get_by_text("2", exact=True).click()
    page.get_by_test_id("stRadio").get_by_text("Unresolved", exact=True).click()
    page.get_by_role("combobox", name="Topic").click()
    page.get_by_role("option", name="other").click()
    box = page.get_by_role("textbox", name="Comment")
    box.fill(PAYLOADS[0])
    box.press("Enter")
    expect(page.get_by_text("Saved 2/5 for hostile-b.")).to_be_visible(timeout=30_000)
    watched.check()
    # Chat: payloads typed by an agent tester, and the model's answers.
    page.goto(f"{make_run}/support-chat")
    sign_in(page, "tester1")
    for payload in (PAYLOADS[0], PAYLOADS[2], PAYLOADS[6]):
        chat = page.get_by_test_id("stChatInputTextArea")
        chat.fill(payload)
        chat.press("Enter")
        expect(page.get_by_test_id("stChatMessage").filter(has_text=payload).first).to_be_visible(
            timeout=60_000
        )
        page.wait_for_timeout(500)
        watched.check()
    # URL parameters on the analyst pages.
    # Two links per analyst page here (AppTest opens every page with every link).
    for n, params in enumerate(URL_PARAMS[:8]):
        path = ("costs", "context-window", "latency-report", "feedback-report")[n % 4]
        page.goto(f"{make_run}/{path}?{urlencode(params, doseq=True)}")
        sign_in(page, "analyst1")
        expect(page.get_by_role("heading", name=HEADINGS[path], exact=True)).to_be_visible(
            timeout=30_000
        )
        watched.check()
    watched.close()
