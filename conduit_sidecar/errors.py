"""Domain errors: the only exceptions the domain layer raises on purpose.

The gRPC layer maps each class to one status code in one place (`status.py`); the Python API
keeps the spec's contract that unknown queries and bad feedback raise `ValueError`.
"""

from __future__ import annotations


class ConduitError(Exception):
    """Base of every error Conduit raises on purpose."""


class InvalidArgument(ConduitError, ValueError):
    """A caller sent something unusable; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(ConduitError, ValueError):
    """An unknown or expired query id (or session with nothing pending)."""

    def __init__(self, message: str, query_id: str | None = None) -> None:
        super().__init__(message)
        self.query_id = query_id


class NoEligibleModel(ConduitError, ValueError):
    """The query's constraints exclude every model; the message says which constraint did."""


class Unavailable(ConduitError):
    """A backing store cannot be reached; the call may be retried."""


class Unauthenticated(ConduitError):
    """A missing or wrong bearer token."""
