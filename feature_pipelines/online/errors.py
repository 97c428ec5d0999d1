"""Errors of the online path, one base class so callers can catch everything Redis-side at once."""


class OnlineStoreError(RuntimeError):
    """Something about the online store is wrong: a missing version, an unreachable Redis, a refused write."""
