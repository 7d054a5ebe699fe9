"""The role matrix in AppTest: admin, analyst, reviewer, agent tester and anonymous against every
page, sign-in, sign-out, expiry, local mode, and a blind review round by two signed-in
reviewers."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from data.access import auth
from data.store.conversations import add_assistant_message, start_turn
from data.store.db import make_engine
from data.workflows import review
from pages.ui.signin import IDENTITY
from tests.helpers.pages import run
from tests.helpers.servers import APP, ROOT

PASSWORD = "a long enough password"
# Every page file: its key in data.access.auth.PAGE_ROLES and the title it shows when it opens.
PAGES = {
    "pages/chat.py": ("chat", "Support chat"),
    "pages/cost.py": ("cost", "Token cost"),
    "pages/context.py": ("context", "Context window"),
    "pages/latency.py": ("latency", "Latency"),
    "pages/conversation.py": ("conversation", "Conversation"),
    "pages/review.py": ("review", "Review"),
    "pages/feedback.py": ("feedback", "Feedback"),
    "pages/users.py": ("users", "Users"),
    "pages/audit.py": ("audit", "Audit log"),
}
ROLES = {
    "admin": set(PAGES),
    "analyst": {
        "pages/cost.py",
        "pages/context.py",
        "pages/latency.py",
        "pages/conversation.py",
        "pages/feedback.py",
    },
    "reviewer": {"pages/review.py"},
    "tester": {"pages/chat.py"},
}


@pytest.fixture
def users(app_env: str) -> Engine:
    engine = make_engine(app_env)
    for role in ROLES:
        auth.add_user(
            engine=engine, actor="test", username=f"{role}1", role=role, password=PASSWORD
        )
    auth.add_user(
        engine=engine, actor="test", username="reviewer2", role="reviewer", password=PASSWORD
    )
    yield engine
    engine.dispose()


def sign_in(name: str, password: str = PASSWORD, at: AppTest | None = None) -> AppTest:
    at = at or run(AppTest.from_file(APP, default_timeout=60))
    assert at.title[0].value == "Sign in"
    at.text_input(key="signin_user").set_value(name)
    at.text_input(key="signin_password").set_value(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return run(at)


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


@pytest.mark.parametrize("role", list(ROLES))
def test_role_matrix(users: Engine, role: str) -> None:
    at = sign_in(f"{role}1")
    # The root URL opens the role's first page; the sidebar says who is signed in.
    first = next(p for p in PAGES if p in ROLES[role])
    assert titles(at) == [PAGES[first][1]], titles(at)
    assert any(f"Signed in as **{role}1**" in c.value for c in at.sidebar.caption)
    for path, (_key, title) in PAGES.items():
        if path in ROLES[role]:
            run(at.switch_page(path))
            assert titles(at) == [title], (role, path, titles(at))
            assert not any("Not allowed" in e.value for e in at.error)
        else:
            # Not in this role's navigation: the router does not serve the file at all.
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page(path)


@pytest.mark.parametrize("role", [*ROLES, "anonymous"])
def test_every_page_checks_the_role_itself(users: Engine, role: str) -> None:
    """A page file run on its own (as Streamlit's legacy pages/ mode would run it, around the
    router) refuses a role that may not open it, and asks an anonymous visitor to sign in."""
    who = None
    if role != "anonymous":
        who = auth.Identity(f"{role}1", role, "password", time.time())
    for path, (key, title) in PAGES.items():
        at = AppTest.from_file(str(ROOT / path), default_timeout=60)
        if who is not None:
            at.session_state[IDENTITY] = who
        run(at)
        if who is None:
            assert titles(at) == ["Sign in"], (path, titles(at))
        elif auth.may_open(role, key):
            assert titles(at) == [title], (role, path, titles(at))
        else:
            assert titles(at) == ["Not allowed"], (role, path, titles(at))
            assert f"signed in as {role}1" in at.error[0].value


def test_anonymous_sees_only_the_sign_in_form(users: Engine) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    assert titles(at) == ["Sign in"]
    for path in PAGES:
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(path)
    bad = sign_in("analyst1", "not the password", at=at)
    assert bad.warning[0].value == auth.WRONG
    assert titles(bad) == ["Sign in"]


def test_ui_throttles_after_five_failures_and_audits(users: Engine) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    for _ in range(5):
        at = sign_in("tester1", "wrong wrong wrong", at=at)
    at = sign_in("tester1", PASSWORD, at=at)
    assert at.warning[0].value.startswith("Too many failed sign-ins")
    with users.connect() as connection:
        reasons = connection.execute(
            text("SELECT detail FROM audit_log WHERE action = 'sign_in_failed' AND target = :t"),
            {"t": "tester1"},
        ).scalars()
        details = list(reasons)
    assert sum('"wrong password"' in d for d in details) == 5
    assert sum('"throttled"' in d for d in details) == 1


def test_sign_out_and_expiry(users: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    at = sign_in("analyst1")
    next(b for b in at.sidebar.button if b.label == "Sign out").click()
    run(at)
    assert titles(at) == ["Sign in"]
    at = sign_in("analyst1", at=at)
    assert titles(at) == ["Token cost"]
    # Two hours later with an eight-hour TTL: still signed in; nine hours later: signed out.
    who = at.session_state[IDENTITY]
    at.session_state[IDENTITY] = replace(who, signed_in_at=time.time() - 2 * 3600)
    run(at)
    assert titles(at) == ["Token cost"]
    at.session_state[IDENTITY] = replace(who, signed_in_at=time.time() - 9 * 3600)
    run(at)
    assert titles(at) == ["Sign in"]
    assert at.warning[0].value == "Your session expired: sign in again."
    with users.connect() as connection:
        actions = connection.execute(
            text("SELECT action FROM audit_log WHERE actor = 'analyst1' ORDER BY id")
        ).scalars()
        assert list(actions)[-3:] == ["sign_out", "sign_in", "sign_out"]


def test_disabling_a_signed_in_user_ends_the_session(users: Engine) -> None:
    at = sign_in("analyst1")
    auth.set_disabled(engine=users, actor="admin1", username="analyst1", disabled=True)
    run(at)
    assert titles(at) == ["Sign in"]
    assert "disabled" in at.warning[0].value


def test_local_mode_has_no_sign_in_and_says_so(app_env: str) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    assert titles(at) == ["Support chat"]
    assert at.sidebar.info[0].value.startswith("Local mode: no sign-in.")
    # Local mode is admin: every page opens.
    for path, (_key, title) in PAGES.items():
        run(at.switch_page(path))
        assert titles(at) == [title], path


def test_local_mode_beyond_loopback_is_refused(app_env: str) -> None:
    st_config.set_option("server.address", "0.0.0.0")
    at = run(AppTest.from_file(APP, default_timeout=60))
    assert titles(at) == []
    assert at.error[0].value.startswith("No users exist and this server listens beyond")


def test_serving_beyond_loopback_without_users_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--server.address", "0.0.0.0"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no users exist"), result.stderr


def review_round(name: str) -> AppTest:
    at = sign_in(name)
    assert titles(at) == ["Review"]
    assert not at.sidebar.text_input  # no typed reviewer name when signed in
    next(b for b in at.button if b.label == "Claim next").click()
    return run(at)


def test_blind_review_round_by_two_signed_in_reviewers(users: Engine) -> None:
    turn = start_turn(engine=users, session_id="blind-1", user_id="cust", text="Where is it?")
    add_assistant_message(
        engine=users, session_id="blind-1", turn=turn, text="On its way.", run_id=None
    )
    review.enqueue(engine=users, session_ids=["blind-1"], reviews_required=2, created_by="admin1")
    first = review_round("reviewer1")
    # A reviewer has no Queue tab (filling and assigning is the admin's).
    assert [t.label for t in first.tabs] == ["Review", "Progress", "My scores"]
    first.radio(key="score").set_value(2)
    first.radio(key="score_outcome").set_value("resolved")
    first.selectbox(key="score_topic").set_value("order status")
    next(b for b in first.button if b.label == "Save and next").click()
    run(first)
    second = review_round("reviewer2")
    assert any("blind-1" in c.value for c in second.caption)
    # Before scoring: nothing of reviewer1's score is on the page.
    assert not any("Other reviewers' scores" in e.label for e in second.expander)
    assert "reviewer1" not in str([d.value for d in second.dataframe])
    second.radio(key="score").set_value(5)
    second.radio(key="score_outcome").set_value("resolved")
    second.selectbox(key="score_topic").set_value("order status")
    next(b for b in second.button if b.label == "Save and next").click()
    run(second)
    others = next(e for e in second.expander if "Other reviewers' scores" in e.label)
    table = others.dataframe[0].value
    assert list(table["reviewer"]) == ["reviewer1"] and list(table["score"]) == [2]
    with users.connect() as connection:
        stored = connection.execute(
            text("SELECT reviewer, score FROM review_scores ORDER BY id")
        ).all()
        actions = connection.execute(
            text("SELECT actor, action FROM audit_log WHERE target = 'blind-1' ORDER BY id")
        ).all()
    assert [tuple(r) for r in stored] == [("reviewer1", 2), ("reviewer2", 5)]
    assert [tuple(a) for a in actions] == [
        ("reviewer1", "claim"),
        ("reviewer1", "score_saved"),
        ("reviewer2", "claim"),
        ("reviewer2", "score_saved"),
    ]
    # My scores: only one's own.
    second.session_state["review_tab"] = "My scores"
    run(second)
    mine = second.dataframe[-1].value
    assert list(mine["score"]) == [5] and "reviewer" not in mine.columns


def test_tester_chats_as_themselves(users: Engine) -> None:
    at = sign_in("tester1")
    assert titles(at) == ["Support chat"]
    assert not at.sidebar.text_input  # no customer id to type
    at.chat_input[0].set_value("Hello, where is my parcel?")
    run(at)
    with users.connect() as connection:
        owners = connection.execute(text("SELECT DISTINCT user_id FROM chat_sessions")).scalars()
        assert list(owners) == ["tester1"]


def test_admin_manages_users_on_the_users_page(users: Engine) -> None:
    at = sign_in("admin1")
    run(at.switch_page("pages/users.py"))
    assert set(at.dataframe[0].value["username"]) >= {"admin1", "analyst1", "reviewer2"}
    field = {t.label: t for t in at.text_input}
    field["User name"].set_value("Nina")
    field["Password"].set_value("a password of nina")
    next(s for s in at.selectbox if s.label == "Role").set_value("analyst")
    next(b for b in at.button if b.label == "Add user").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    assert auth.user_role(engine=users, username="nina") == "analyst"
    # A bad password is refused with the reason, and nothing changes.
    at.selectbox(key="u_target").set_value("nina")
    run(at)
    next(t for t in at.text_input if t.label == "New password").set_value("short")
    next(b for b in at.button if b.label == "Set password").click()
    run(at)
    assert any("at least 12" in e.value for e in at.error)
    # An admin cannot take the admin role from themselves.
    at.selectbox(key="u_target").set_value("admin1")
    run(at)
    next(s for s in at.selectbox if s.label == "Role" and s.value == "admin").set_value("analyst")
    next(b for b in at.button if b.label == "Change role").click()
    run(at)
    assert auth.user_role(engine=users, username="admin1") == "admin"


def test_audit_log_page_filters_and_exports(users: Engine) -> None:
    at = sign_in("admin1")
    run(at.switch_page("pages/audit.py"))
    table = at.dataframe[0].value
    assert {"sign_in", "user_added"} <= set(table["action"])
    at.sidebar.multiselect(key="audit_actions").set_value(["sign_in"])
    run(at)
    table = at.dataframe[0].value
    assert set(table["action"]) == {"sign_in"} and "admin1" in set(table["actor"])
    with users.connect() as connection:
        expected = connection.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'sign_in'")
        ).scalar_one()
    assert len(table) == expected
    assert any(d.label == "Download CSV" for d in at.get("download_button"))
