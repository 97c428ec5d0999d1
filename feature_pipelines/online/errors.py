"""Errors of the online path, one base class so callers can catch everything Redis-side at once."""


class OnlineStoreError(RuntimeError):
    """Something about the online store is wrong: a missing version, an unreachable Redis, a refused write."""


class RedisUnavailable(OnlineStoreError):
    """Redis did not answer in time, refused the connection, or the circuit breaker is open (failing fast)."""


class EntityIdError(OnlineStoreError, ValueError):
    """An id that is not of the entity's key dtype: reading it would read another key (or none)."""
