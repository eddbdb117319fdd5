"""asyncpg's reconnect noise during a PostgreSQL outage, turned into one warning.

asyncpg (0.32) keeps each pool's connection floor (`min_size`, our `min_pool_size`) with a
background task that reconnects whenever a connection is lost, and logs every failed attempt
at WARNING with its full traceback; the task starts over (retry delay back to 1 s) each time
a connection is released, so an outage under traffic printed a traceback every 1-4 s. The
floor is worth keeping (connections are warm again as soon as the server is back), so the
reconnect task stays and this filter on the `asyncpg.pool` logger replaces its records with
one line without a traceback, at most every FLOOR_WARNING_INTERVAL_S. Every other asyncpg
record passes untouched.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

# At most one warning per this many seconds about a pool that cannot reconnect.
FLOOR_WARNING_INTERVAL_S = 30.0
_FLOOR_MESSAGE = "Failed to restore the pool connection floor"


class _FloorRetryFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._warned_at = -FLOOR_WARNING_INTERVAL_S
        self._suppressed = 0
        self.outage = False  # a reconnect failed since the last call that worked

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(_FLOOR_MESSAGE):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        cause = "unknown error" if exc is None else f"{type(exc).__name__}: {exc}".rstrip(": ")
        now = time.monotonic()
        with self._lock:
            self.outage = True
            if now - self._warned_at < FLOOR_WARNING_INTERVAL_S:
                self._suppressed += 1
                return False
            self._warned_at = now
            suppressed, self._suppressed = self._suppressed, 0
        log.warning(
            "PostgreSQL unreachable: a connection pool of the feedback store cannot reconnect (%s);"
            " asyncpg retries in the background and store calls fail with UNAVAILABLE"
            " meanwhile%s. Repeated at most every %.0f s while it lasts",
            cause,
            f" ({suppressed} failed attempts since the last warning)" if suppressed else "",
            FLOOR_WARNING_INTERVAL_S,
        )
        return False

    def recovered(self) -> None:
        """A store call worked after failed reconnects: say so once, and let the next
        outage warn at once."""
        with self._lock:
            if not self.outage:
                return
            suppressed = self._suppressed
            self.reset_locked()
        log.info(
            "PostgreSQL reachable again: the feedback store's calls work%s",
            f" ({suppressed} failed reconnects since the last warning)" if suppressed else "",
        )

    def reset(self) -> None:
        """Forget the outage and the last warning (also for tests that each cause one)."""
        with self._lock:
            self.reset_locked()

    def reset_locked(self) -> None:
        self._warned_at = -FLOOR_WARNING_INTERVAL_S
        self._suppressed = 0
        self.outage = False


FLOOR_FILTER = _FloorRetryFilter()


def quiet_floor_retries() -> None:
    """Install the filter on asyncpg's pool logger (idempotent)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if FLOOR_FILTER not in pool_log.filters:
        pool_log.addFilter(FLOOR_FILTER)
