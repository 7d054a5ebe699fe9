"""Sign-in throttling: failed attempts per user name and per address, counted in the database
or in Redis, and how long the next attempt must wait."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Protocol

import redis
from sqlalchemy import Engine, delete, insert, select

from data.config.settings import Settings
from data.store.orm import utcnow
from data.store.orm_team import AuthFailure


class Throttle(Protocol):
    def retry_after(self, scope: str, key: str, limit: int) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        ...

    def fail(self, scope: str, key: str) -> None: ...

    def clear(self, scope: str, key: str) -> None: ...


class DatabaseThrottle:
    """A sliding window over the auth_failures rows (one row per failure)."""

    def __init__(self, engine: Engine, window_s: int) -> None:
        self.engine, self.window = engine, timedelta(seconds=window_s)

    def retry_after(self, scope: str, key: str, limit: int) -> float:
        now = utcnow()
        F = AuthFailure.__table__.c
        with self.engine.connect() as connection:
            times = connection.execute(
                select(F.ts)
                .where(F.scope == scope, F.key == key, F.ts > now - self.window)
                .order_by(F.ts.desc())
                .limit(limit)
            ).scalars()
            recent = list(times)
        if len(recent) < limit:
            return 0.0
        return max(0.0, (recent[-1] + self.window - now).total_seconds())

    def fail(self, scope: str, key: str) -> None:
        now = utcnow()
        F = AuthFailure.__table__.c
        with self.engine.begin() as connection:
            connection.execute(insert(AuthFailure).values(ts=now, scope=scope, key=key[:256]))
            # Keep the table small: rows older than a day count for nothing.
            connection.execute(delete(AuthFailure).where(F.ts < now - max(self.window, DAY)))

    def clear(self, scope: str, key: str) -> None:
        F = AuthFailure.__table__.c
        with self.engine.begin() as connection:
            connection.execute(delete(AuthFailure).where(F.scope == scope, F.key == key))


DAY = timedelta(days=1)


class RedisThrottle:
    """The same sliding window in a Redis sorted set per key (failure times as scores)."""

    def __init__(self, client: redis.Redis, window_s: int, prefix: str = "acb:auth:") -> None:
        self.client, self.window, self.prefix = client, float(window_s), prefix

    def _key(self, scope: str, key: str) -> str:
        return f"{self.prefix}{scope}:{key}"

    def retry_after(self, scope: str, key: str, limit: int) -> float:
        name, now = self._key(scope, key), time.time()
        self.client.zremrangebyscore(name, "-inf", now - self.window)
        recent = self.client.zrevrange(name, 0, limit - 1, withscores=True)
        if len(recent) < limit:
            return 0.0
        return max(0.0, float(recent[-1][1]) + self.window - now)

    def fail(self, scope: str, key: str) -> None:
        name, now = self._key(scope, key), time.time()
        pipe = self.client.pipeline()
        pipe.zadd(name, {f"{now:.6f}:{time.perf_counter_ns()}": now})
        pipe.expire(name, int(self.window) + 1)
        pipe.execute()

    def clear(self, scope: str, key: str) -> None:
        self.client.delete(self._key(scope, key))


def make_throttle(settings: Settings, engine: Engine) -> Throttle:
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        return RedisThrottle(client, settings.auth_failure_window_s)
    return DatabaseThrottle(engine, settings.auth_failure_window_s)
