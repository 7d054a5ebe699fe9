"""Per-user rate limit on chat turns, shared by the chat page and the API.

Built on `limits` (moving windows): at most RATE_LIMIT_PER_MINUTE turns in any 60 seconds and
at most RATE_LIMIT_BURST in any one second, per user. With REDIS_URL the counters live in Redis
and every replica shares them; otherwise they are this process's. If Redis does not answer, the
turn is let through (and logged): a broken limiter must not stop the support chat."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


class RateLimiter:
    """`check(user_id)` takes one turn from the user's allowance, or says how long to wait."""

    def __init__(self, *, per_minute: int, burst: int, redis_url: str | None = None) -> None:
        self.items = [RateLimitItemPerMinute(per_minute), RateLimitItemPerSecond(burst)]
        storage = storage_from_string(redis_url) if redis_url else MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)
        self.shared = redis_url is not None

    def check(self, user_id: str) -> float | None:
        """None when the turn may go ahead (and it is counted), else seconds until it may."""
        try:
            for item in self.items:
                if not self.limiter.test(item, "chat", user_id):
                    reset = self.limiter.get_window_stats(item, "chat", user_id).reset_time
                    return max(1.0, math.ceil(reset - time.time()))
            for item in self.items:
                self.limiter.hit(item, "chat", user_id)
        except Exception as error:  # Redis down: let the turn through
            log.warning("rate limiter unavailable, turn allowed: %s", error)
        return None
