"""A circuit breaker for the serving client: while Redis is down or stalled, fail fast instead of waiting.

Closed: calls go through; `failures` consecutive connection or timeout errors open it. Open: calls fail at
once, without touching the network, for `cooldown` seconds. Then one call is let through as a probe
(the others keep failing fast); if Redis answers, the breaker closes, otherwise it opens again. Nobody
has to reset it: it recovers by itself as soon as Redis does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from feature_pipelines.online.errors import RedisUnavailable


class CircuitBreaker:
    def __init__(self, failures: int = 3, cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError("a circuit breaker needs failures >= 1 and cooldown >= 0")
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None
        self._last_error = ""

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def before(self, where: str) -> None:
        """Raise `RedisUnavailable` at once while open; let one probe through once the cool-down is over."""
        if self._opened_at is None:  # closed: the hot path takes no lock
            return
        with self._lock:
            if self._opened_at is None:
                return
            now = self._clock()
            wait = self._opened_at + self.cooldown - now
            # A probe that never reported back (it raised something else) does not block later probes forever.
            probing = self._probe_since is not None and now - self._probe_since < max(self.cooldown, 1.0)
            if wait > 0 or probing:
                raise RedisUnavailable(
                    f"Redis at {where} is unavailable ({self._consecutive} consecutive failures, the last: "
                    f"{self._last_error}); failing fast for {max(wait, 0):.1f}s more, then one call probes it"
                )
            self._probe_since = now

    def success(self) -> None:
        if self._consecutive or self._opened_at is not None:
            with self._lock:
                self._consecutive = 0
                self._opened_at = None
                self._probe_since = None

    def failure(self, error: BaseException) -> None:
        with self._lock:
            self._consecutive += 1
            self._last_error = str(error) or type(error).__name__
            if self._probe_since is not None or self._consecutive >= self.failures:
                self._opened_at = self._clock()
                self._probe_since = None
