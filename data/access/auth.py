"""Users, roles and sign-in: argon2 password hashes, failed sign-ins throttled per user and per
address (in Redis with REDIS_URL, else in the database, so every replica counts the same), the
role -> pages map that the router and every page check, and the CLI that manages users:

    python -m data.access.auth add NAME --role admin|analyst|reviewer|tester [--email E] [--sso]
    python -m data.access.auth passwd NAME
    python -m data.access.auth role NAME ROLE
    python -m data.access.auth disable NAME | enable NAME
    python -m data.access.auth list

There is no default user and no default password: the first admin is created with `add`.
Passwords are read without echo (or one line from stdin with --password-stdin)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from data.access import audit
from data.access.throttle import Throttle
from data.config.settings import Settings
from data.store.db import failure_reason, make_engine
from data.store.orm import utcnow
from data.store.orm_team import ROLES, User

ROLE_LABELS = {
    "admin": "Admin",
    "analyst": "Analyst",
    "reviewer": "Reviewer",
    "tester": "Agent tester",
}
# Which roles may open each page (the keys are the router's page keys). The router lists only
# these pages in the navigation and every page checks again with `may_open`.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "chat": frozenset({"admin", "tester"}),
    "cost": frozenset({"admin", "analyst"}),
    "context": frozenset({"admin", "analyst"}),
    "latency": frozenset({"admin", "analyst"}),
    "status": frozenset({"admin", "analyst"}),
    "conversation": frozenset({"admin", "analyst"}),
    "feedback": frozenset({"admin", "analyst"}),
    "outcomes": frozenset({"admin", "analyst"}),
    "review": frozenset({"admin", "reviewer"}),
    "tickets": frozenset({"admin"}),
    "users": frozenset({"admin"}),
    "audit": frozenset({"admin"}),
    "prices": frozenset({"admin"}),
    "budgets": frozenset({"admin"}),
    "replay": frozenset({"admin"}),
}
# Actions inside a page that not every role that opens the page may take.
ACTION_ROLES: dict[str, frozenset[str]] = {
    "review.queue": frozenset({"admin"}),  # fill the queue and assign items
    "feedback.retry_sync": frozenset({"admin"}),
}
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
LOCAL_USER = "local"
LOCAL_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})  # single-user local mode only
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so an unknown name takes as long as a wrong
# password (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


class AuthInputError(ValueError):
    """A user-management request that cannot be done; the message is shown as is."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is using the app: a signed-in user, or the single local user of local mode."""

    username: str
    role: str
    source: str  # "password", "oidc" or "local"
    signed_in_at: float = 0.0  # time.time() of the sign-in

    @property
    def label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    email: str | None
    role: str
    disabled: bool
    has_password: bool
    created_at: datetime
    updated_at: datetime


def may_open(role: str | None, page: str) -> bool:
    return role is not None and role in PAGE_ROLES.get(page, frozenset())


def may(role: str | None, action: str) -> bool:
    return role is not None and role in ACTION_ROLES.get(action, frozenset())


def pages_for(role: str | None) -> list[str]:
    return [page for page, roles in PAGE_ROLES.items() if role in roles]


def normalize_username(name: str) -> str:
    text = (name or "").strip().lower()
    if not USERNAME.fullmatch(text):
        raise AuthInputError(
            "A user name is 1-64 characters: lower-case letters, digits and . _ @ -, "
            "starting with a letter or digit."
        )
    return text


def check_role(role: str) -> str:
    text = (role or "").strip().lower().replace("agent tester", "tester").replace("agent_", "")
    if text not in ROLES:
        raise AuthInputError(f"Unknown role {role!r}; one of {', '.join(ROLES)}.")
    return text


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthInputError(f"A password has at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AuthInputError(f"A password has at most {MAX_PASSWORD_CHARS} characters.")
    if password.strip() != password or "\x00" in password:
        raise AuthInputError("A password cannot start or end with spaces or hold a NUL.")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


# Users --------------------------------------------------------------------------------------

U = User.__table__.c


def has_users(*, engine: Engine) -> bool:
    """Whether any user exists (disabled ones count: the app is no longer single-user)."""
    with engine.connect() as connection:
        return connection.execute(select(U.id).limit(1)).first() is not None


def list_users(*, engine: Engine) -> list[UserRow]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                U.username,
                U.email,
                U.role,
                U.disabled,
                U.password_hash.is_not(None),
                U.created_at,
                U.updated_at,
            ).order_by(U.username)
        ).all()
    return [UserRow(*row) for row in rows]


def add_user(
    *,
    engine: Engine,
    actor: str,
    username: str,
    role: str,
    password: str | None,
    email: str | None = None,
) -> UserRow:
    """Create a user (password None: single sign-on only) and audit it."""
    name, role = normalize_username(username), check_role(role)
    mail = (email or "").strip().lower() or None
    if mail is not None and (len(mail) > 254 or not re.fullmatch(r"[^@\s]+@[^@\s]+", mail)):
        raise AuthInputError(f"{email!r} is not an e-mail address.")
    hashed = None if password is None else hash_password(password)
    now = utcnow()
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(User).values(
                    username=name,
                    email=mail,
                    role=role,
                    password_hash=hashed,
                    disabled=False,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise AuthInputError(f"A user {name!r} (or with that e-mail) exists already.") from None
    audit.record(
        engine=engine,
        actor=actor,
        action="user_added",
        target=name,
        detail={"role": role, "email": mail, "password": hashed is not None},
    )
    return UserRow(name, mail, role, False, hashed is not None, now, now)


def _change(engine: Engine, username: str, **values: Any) -> str:
    name = normalize_username(username)
    with engine.begin() as connection:
        done = connection.execute(
            update(User).where(U.username == name).values(updated_at=utcnow(), **values)
        )
    if done.rowcount == 0:
        raise AuthInputError(f"There is no user {name!r}.")
    return name


def set_password(*, engine: Engine, actor: str, username: str, password: str) -> None:
    name = _change(engine, username, password_hash=hash_password(password))
    audit.record(engine=engine, actor=actor, action="password_changed", target=name)


def set_role(*, engine: Engine, actor: str, username: str, role: str) -> None:
    role = check_role(role)
    name = normalize_username(username)
    with engine.connect() as connection:
        before = connection.execute(select(U.role).where(U.username == name)).scalar()
    _change(engine, name, role=role)
    audit.record(
        engine=engine,
        actor=actor,
        action="role_changed",
        target=name,
        detail={"from": before, "to": role},
    )


def set_disabled(*, engine: Engine, actor: str, username: str, disabled: bool) -> None:
    name = _change(engine, username, disabled=disabled)
    action = "user_disabled" if disabled else "user_enabled"
    audit.record(engine=engine, actor=actor, action=action, target=name)


def _user(engine: Engine, where: Any) -> tuple[str, str, str | None, bool] | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(U.username, U.role, U.password_hash, U.disabled).where(where)
        ).first()
    return None if row is None else (row[0], row[1], row[2], bool(row[3]))


def user_role(*, engine: Engine, username: str) -> str | None:
    """The role of an enabled user, or None (unknown or disabled): checked on every rerun, so a
    role change or a disable takes effect at the user's next click."""
    found = _user(engine, U.username == username)
    return None if found is None or found[3] else found[1]


# Throttling ---------------------------------------------------------------------------------


# Sign-in ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignIn:
    identity: Identity | None
    message: str  # shown to the person signing in


WRONG = "Wrong user name or password."


def _wait(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def sign_in(
    *,
    engine: Engine,
    throttle: Throttle,
    settings: Settings,
    username: str,
    password: str,
    address: str,
) -> SignIn:
    """Check a user name and password, throttled per user and per address; every attempt is
    audited. The message never says whether the user exists."""
    name = (username or "").strip().lower()[:64]
    address = address[:128] or "unknown"
    try:
        waits = [
            throttle.retry_after("user", name, settings.auth_max_failures_per_user),
            throttle.retry_after("address", address, settings.auth_max_failures_per_address),
        ]
    except redis.RedisError as error:
        return SignIn(None, f"Sign-in is unavailable: Redis does not answer ({error}).")
    detail = {"address": address}
    if max(waits) > 0:
        audit.try_record(
            engine=engine,
            actor=name or "anonymous",
            action="sign_in_failed",
            target=name,
            detail={**detail, "reason": "throttled"},
        )
        return SignIn(
            None,
            f"Too many failed sign-ins for this user or from this address: try again in "
            f"{_wait(max(waits))}.",
        )
    found = _user(engine, U.username == name) if USERNAME.fullmatch(name) else None
    stored = found[2] if found else None
    ok = False
    try:
        ok = _HASHER.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    reason = (
        "unknown user"
        if found is None
        else "no password (single sign-on only)"
        if stored is None
        else "disabled"
        if found[3]
        else None
        if ok
        else "wrong password"
    )
    if found is None or stored is None or found[3] or not ok:
        with contextlib.suppress(redis.RedisError):  # the attempt is still refused and audited
            throttle.fail("user", name)
            throttle.fail("address", address)
        audit.try_record(
            engine=engine,
            actor=name or "anonymous",
            action="sign_in_failed",
            target=name,
            detail={**detail, "reason": reason},
        )
        return SignIn(None, WRONG)
    if _HASHER.check_needs_rehash(stored):
        _change(engine, name, password_hash=_HASHER.hash(password))
    with contextlib.suppress(redis.RedisError):
        throttle.clear("user", name)
    audit.record(engine=engine, actor=name, action="sign_in", target=name, detail=detail)
    return SignIn(Identity(name, found[1], "password", time.time()), f"Signed in as {name}.")


def oidc_identity(
    *, engine: Engine, claims: Mapping[str, Any], role_claim: str | None
) -> Identity | str:
    """The identity for a person signed in through OIDC (`st.user`), or why they may not use
    the app. The role comes from `role_claim` when it is set and holds a role; otherwise the
    users table is looked up by the e-mail claim (and must not be disabled)."""
    email = str(claims.get("email") or "").strip().lower()
    if role_claim:
        value = claims.get(role_claim)
        values = value if isinstance(value, list) else [value]
        roles = [str(v).strip().lower() for v in values if v is not None]
        role = next((r for r in ("admin", "analyst", "reviewer", "tester") if r in roles), None)
        if role is not None:
            subject = email or str(claims.get("sub") or "")
            if not subject:
                return "The identity provider sent neither an e-mail nor a subject."
            return Identity(subject[:64], role, "oidc", time.time())
    if not email:
        return "The identity provider sent no e-mail address, so no role can be looked up."
    found = _user(engine, func.lower(U.email) == email)
    if found is None:
        return (
            f"{email} has no role in agent-chatbase; an admin adds it with "
            f"`python -m data.access.auth add NAME --email {email} --role ROLE --sso`."
        )
    if found[3]:
        return f"The account {found[0]} is disabled."
    return Identity(found[0], found[1], "oidc", time.time())


def expired(identity: Identity, ttl_s: int, now: float | None = None) -> bool:
    if identity.source == "local":
        return False
    return (now if now is not None else time.time()) - identity.signed_in_at > ttl_s


# CLI ----------------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise AuthInputError("The two passwords differ.")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.access.auth", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--db", help="database URL (default: the configured one)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--email", help="for single sign-on (OIDC) lookups")
    add.add_argument("--sso", action="store_true", help="no password: sign in through OIDC only")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = commands.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    role = commands.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    for verb in ("disable", "enable"):
        commands.add_parser(verb, help=f"{verb} a user").add_argument("name")
    commands.add_parser("list", help="list the users")
    args = parser.parse_args(argv)

    from data.store.migrate import upgrade_for_command

    url = upgrade_for_command(args.db)
    if url is None:
        return 2
    engine = make_engine(url)
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.command == "add":
            password = None if args.sso else _read_password(args)
            made = add_user(
                engine=engine,
                actor=actor,
                username=args.name,
                role=args.role,
                password=password,
                email=args.email,
            )
            print(f"added {made.username} ({made.role})")
        elif args.command == "passwd":
            set_password(
                engine=engine, actor=actor, username=args.name, password=_read_password(args)
            )
            print(f"password changed for {normalize_username(args.name)}")
        elif args.command == "role":
            set_role(engine=engine, actor=actor, username=args.name, role=args.role)
            print(f"{normalize_username(args.name)} is now {args.role}")
        elif args.command in ("disable", "enable"):
            set_disabled(
                engine=engine,
                actor=actor,
                username=args.name,
                disabled=args.command == "disable",
            )
            print(f"{normalize_username(args.name)} {args.command}d")
        else:
            for row in list_users(engine=engine):
                state = "disabled" if row.disabled else "enabled"
                how = "password" if row.has_password else "sso only"
                print(f"{row.username}\t{row.role}\t{state}\t{how}\t{row.email or ''}")
    except AuthInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        print(f"error: the database refused the change: {failure_reason(error)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
