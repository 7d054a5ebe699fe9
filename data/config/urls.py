"""Database and service URLs: the driver forms SQLAlchemy and psycopg want, and a form safe to
show on a page or in a log."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import make_url


def to_sqlalchemy_url(url: str) -> str:
    """`postgresql://` and `postgres://` become `postgresql+psycopg://`; others pass through."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def to_libpq_url(url: str) -> str:
    """The plain `postgresql://` form that psycopg and LangGraph's Postgres saver want."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


# Query parameters whose values are credentials (presigned URLs, tokens in a query string).
_SECRET_QUERY_KEYS = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "signature")


def redact_url(url: object) -> str:
    """A URL safe to show on a page or in a log: the password in `user:password@host` becomes
    `***`, and so do the values of credential-like query parameters (`?api_key=...`). The user
    name, host, port and path stay, so an operator can still tell which server it is. Anything
    that does not parse as a URL is shown as `***` rather than risk printing a secret."""
    if url is None:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return "***"
    if not parts.scheme or not parts.netloc:
        # Not a URL with a host (`user:pass@host` parses as scheme "user"): show nothing of it.
        return "***" if ("@" in text or ":" in text) else text
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [
                (k, "***" if any(word in k.lower() for word in _SECRET_QUERY_KEYS) else v)
                for k, v in pairs
            ],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
