"""Users, roles, sign-in throttling and the audit log, on SQLite and Postgres (and Redis)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from data.access import audit, auth
from data.access import throttle as throttling
from data.config.settings import load_settings
from tests.helpers.servers import ROOT

PASSWORD = "correct horse battery staple"


def make_user(engine: Engine, name: str, role: str = "reviewer", **kw: object) -> None:
    auth.add_user(
        engine=engine,
        actor="test",
        username=name,
        role=role,
        password=PASSWORD,
        **kw,  # type: ignore[arg-type]
    )


def attempt(engine: Engine, throttle: auth.Throttle, name: str, password: str, address: str):  # type: ignore[no-untyped-def]
    return auth.sign_in(
        engine=engine,
        throttle=throttle,
        settings=load_settings(auth_max_failures_per_user=3, auth_max_failures_per_address=5),
        username=name,
        password=password,
        address=address,
    )


def test_password_is_hashed_with_argon2_and_checked(engine: Engine) -> None:
    make_user(engine, "Alice", role="analyst")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT username, password_hash FROM users")).one()
    assert stored[0] == "alice" and stored[1].startswith("$argon2id$")
    assert PASSWORD not in stored[1]
    throttle = throttling.DatabaseThrottle(engine, 900)
    ok = attempt(engine, throttle, " ALICE ", PASSWORD, "10.0.0.1")
    assert ok.identity is not None and ok.identity.role == "analyst"
    wrong = attempt(engine, throttle, "alice", PASSWORD + "x", "10.0.0.1")
    unknown = attempt(engine, throttle, "nobody", PASSWORD, "10.0.0.1")
    # The same words whether the user exists or not.
    assert wrong.identity is None and wrong.message == unknown.message == auth.WRONG


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "", "role": "admin", "password": PASSWORD}, "A user name is"),
        ({"username": "a b", "role": "admin", "password": PASSWORD}, "A user name is"),
        ({"username": "x" * 65, "role": "admin", "password": PASSWORD}, "A user name is"),
        ({"username": "bob", "role": "root", "password": PASSWORD}, "Unknown role"),
        ({"username": "bob", "role": "admin", "password": "short"}, "at least 12"),
        ({"username": "bob", "role": "admin", "password": " padded password "}, "spaces"),
        (
            {"username": "bob", "role": "admin", "password": PASSWORD, "email": "no-at"},
            "not an e-mail",
        ),
    ],
)
def test_bad_user_input_is_refused_and_nothing_written(
    engine: Engine, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(auth.AuthInputError, match=message):
        auth.add_user(engine=engine, actor="test", **kwargs)  # type: ignore[arg-type]
    assert not auth.has_users(engine=engine)


def test_disabled_user_and_changed_role(engine: Engine) -> None:
    make_user(engine, "carl", role="tester")
    throttle = throttling.DatabaseThrottle(engine, 900)
    auth.set_role(engine=engine, actor="admin1", username="carl", role="reviewer")
    assert auth.user_role(engine=engine, username="carl") == "reviewer"
    auth.set_disabled(engine=engine, actor="admin1", username="carl", disabled=True)
    assert auth.user_role(engine=engine, username="carl") is None
    assert attempt(engine, throttle, "carl", PASSWORD, "10.0.0.2").identity is None
    with pytest.raises(auth.AuthInputError, match="exists already"):
        make_user(engine, "carl")
    with pytest.raises(auth.AuthInputError, match="no user"):
        auth.set_role(engine=engine, actor="admin1", username="ghost", role="admin")
    actions = audit.entries(
        engine=engine,
        query=audit.AuditQuery(
            start=audit.utcnow().replace(year=2000), end=audit.utcnow().replace(year=2100)
        ),
    )
    mine = actions[actions["target"] == "carl"]
    assert {"user_added", "role_changed", "user_disabled", "sign_in_failed"} <= set(mine["action"])
    change = mine[mine["action"] == "role_changed"].iloc[0]
    assert change["actor"] == "admin1" and '"from": "tester"' in change["detail"]


def throttles(engine: Engine, kind: str, client: redis.Redis | None) -> throttling.Throttle:
    if kind == "redis":
        assert client is not None
        return throttling.RedisThrottle(client, 900, prefix=f"acb:test:{uuid.uuid4().hex}:")
    return throttling.DatabaseThrottle(engine, 900)


@pytest.mark.parametrize("kind", ["database", "redis"])
def test_failed_sign_ins_are_throttled_per_user_and_per_address(
    engine: Engine, kind: str, request: pytest.FixtureRequest
) -> None:
    client = request.getfixturevalue("redis_client") if kind == "redis" else None
    throttle = throttles(engine, kind, client)
    make_user(engine, "dana")
    for _ in range(3):  # the per-user limit is 3
        assert attempt(engine, throttle, "dana", "wrong password!", "10.1.0.1").identity is None
    # The right password is refused too now, from any address.
    late = attempt(engine, throttle, "dana", PASSWORD, "10.1.0.99")
    assert late.identity is None and late.message.startswith("Too many failed sign-ins")
    assert "15 minutes" in late.message
    # The per-address limit (5): one address guessing across many names.
    make_user(engine, "erik")
    for n in range(5):
        attempt(engine, throttle, f"guess{n}", "nope nope nope", "10.2.0.1")
    blocked = attempt(engine, throttle, "erik", PASSWORD, "10.2.0.1")
    assert blocked.message.startswith("Too many failed sign-ins")
    assert attempt(engine, throttle, "erik", PASSWORD, "10.2.0.2").identity is not None


def test_two_replicas_share_the_database_throttle(db_url: str) -> None:
    """Two engines stand for two app replicas: failures on one count on the other."""
    from data.store.db import make_engine

    one, two = make_engine(db_url), make_engine(db_url)
    try:
        make_user(one, "fay")
        for _ in range(3):
            attempt(
                one, throttling.DatabaseThrottle(one, 900), "fay", "wrong password!", "10.3.0.1"
            )
        other = attempt(two, throttling.DatabaseThrottle(two, 900), "fay", PASSWORD, "10.3.0.2")
        assert other.message.startswith("Too many failed sign-ins")
    finally:
        one.dispose()
        two.dispose()


def test_window_slides(engine: Engine) -> None:
    throttle = throttling.DatabaseThrottle(engine, 1)
    for _ in range(3):
        throttle.fail("user", "gus")
    assert throttle.retry_after("user", "gus", 3) > 0
    time.sleep(1.1)
    assert throttle.retry_after("user", "gus", 3) == 0


def test_audit_log_is_append_only(engine: Engine) -> None:
    audit.record(engine=engine, actor="hal", action="export", target="cost_by_user")
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert audit.count(engine=engine, actions=["export"]) >= 1


def test_audit_filters(engine: Engine) -> None:
    actor = f"ivy{uuid.uuid4().hex[:6]}"
    audit.record(engine=engine, actor=actor, action="export", target="Cost_By_User")
    audit.record(engine=engine, actor=actor, action="score_saved", target="s-1", detail={"a": 1})
    audit.record(engine=engine, actor=actor, action="export", target="100%_done")
    window = dict(start=audit.utcnow().replace(year=2000), end=audit.utcnow().replace(year=2100))
    found = audit.entries(engine=engine, query=audit.AuditQuery(**window, actor=actor))
    assert list(found["action"]) == ["export", "score_saved", "export"]
    exports = audit.AuditQuery(**window, actor=actor, actions=("export",), target="cost_by")
    assert list(audit.entries(engine=engine, query=exports)["target"]) == ["Cost_By_User"]
    # LIKE wildcards typed into the filter are literal.
    percent = audit.AuditQuery(**window, actor=actor, target="%")
    assert list(audit.entries(engine=engine, query=percent)["target"]) == ["100%_done"]


def test_oidc_role_from_claim_or_user_table(engine: Engine) -> None:
    make_user(engine, "jo", role="analyst", email="Jo@Example.com")
    by_table = auth.oidc_identity(
        engine=engine, claims={"email": "jo@example.com"}, role_claim=None
    )
    assert isinstance(by_table, auth.Identity) and (by_table.username, by_table.role) == (
        "jo",
        "analyst",
    )
    by_claim = auth.oidc_identity(
        engine=engine,
        claims={"email": "kim@example.com", "groups": ["reviewer"]},
        role_claim="groups",
    )
    assert isinstance(by_claim, auth.Identity) and by_claim.role == "reviewer"
    stranger = auth.oidc_identity(engine=engine, claims={"email": "x@y.org"}, role_claim=None)
    assert isinstance(stranger, str) and "has no role" in stranger
    auth.set_disabled(engine=engine, actor="t", username="jo", disabled=True)
    assert "disabled" in str(
        auth.oidc_identity(engine=engine, claims={"email": "jo@example.com"}, role_claim=None)
    )


def test_session_expiry() -> None:
    who = auth.Identity("lea", "analyst", "password", signed_in_at=1000.0)
    assert not auth.expired(who, 60, now=1059.0)
    assert auth.expired(who, 60, now=1061.0)
    assert not auth.expired(auth.Identity("local", "admin", "local"), 60, now=1e12)


def test_every_role_has_pages_and_admin_has_all() -> None:
    assert set(auth.pages_for("admin")) == set(auth.PAGE_ROLES)
    assert auth.pages_for("tester") == ["chat"]
    assert auth.pages_for("reviewer") == ["review"]
    assert "conversation" in auth.pages_for("analyst") and "chat" not in auth.pages_for("analyst")
    assert auth.pages_for(None) == []


def cli(db_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data.access.auth", "--db", db_url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_add_passwd_role_disable(db_url: str, engine: Engine) -> None:
    added = cli(db_url, "add", "Root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added root (admin)"
    assert PASSWORD not in added.stdout + added.stderr
    short = cli(db_url, "passwd", "root", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and short.stderr.strip() == (
        "error: A password has at least 12 characters."
    )
    assert (
        cli(db_url, "passwd", "root", "--password-stdin", stdin="a new long password\n").returncode
        == 0
    )
    assert cli(db_url, "role", "root", "analyst").returncode == 0
    assert cli(db_url, "disable", "root").returncode == 0
    listed = cli(db_url, "list").stdout
    assert listed.split("\t")[:4] == ["root", "analyst", "disabled", "password"]
    missing = cli(db_url, "role", "ghost", "admin")
    assert missing.returncode == 2 and "There is no user 'ghost'" in missing.stderr
    throttle = throttling.DatabaseThrottle(engine, 900)
    assert attempt(engine, throttle, "root", "a new long password", "10.9.0.1").identity is None
    cli(db_url, "enable", "root")
    assert attempt(engine, throttle, "root", "a new long password", "10.9.0.1").identity is not None
    actors = audit.entries(
        engine=engine,
        query=audit.AuditQuery(
            start=audit.utcnow().replace(year=2000),
            end=audit.utcnow().replace(year=2100),
            target="root",
        ),
    )
    assert set(actors.loc[actors["action"] != "sign_in", "actor"]) <= {
        f"cli:{__import__('getpass').getuser()}",
        "root",
    }


def test_no_default_user_exists(engine: Engine) -> None:
    """A migrated database has no user, so no default password can work."""
    assert not auth.has_users(engine=engine)
    throttle = throttling.DatabaseThrottle(engine, 900)
    for name, password in [("admin", "admin"), ("admin", "change_me"), ("root", "password")]:
        assert attempt(engine, throttle, name, password, "10.8.0.1").identity is None
