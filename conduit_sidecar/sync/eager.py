"""Eager publishing (sync_interval_s = 0): a call that changed the policy returns only after
its delta is in the store.

Implemented by wrapping methods on the router and collector *instances* (the classes are
untouched, and removing the instance attributes restores them), so neither needs to know
about replication: `Router.update` and the collector's `record` / `track` /
`record_session_feedback` await `flush()` after they ran; `Router.apply_observation`, which
is synchronous, wakes the sync loop so other callers publish within one loop turn.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from conduit_sidecar.errors import Unavailable

COLLECTOR_METHODS = ("record", "track", "record_session_feedback")


class EagerHooks:
    """Installs and removes the wrappers; `flush` publishes, `wake` nudges the sync loop."""

    def __init__(self, flush: Callable[[], Awaitable[None]], wake: Callable[[], None]) -> None:
        self._flush = flush
        self._wake = wake
        self._hooked: list[tuple[object, str]] = []

    def install(self, router: Any, collector: Any = None) -> None:
        sync_apply = router.apply_observation
        wake = self._wake

        @functools.wraps(sync_apply)
        def apply_observation(*args: Any, **kwargs: Any) -> None:
            sync_apply(*args, **kwargs)
            wake()  # callers that cannot await still publish within one loop turn

        setattr(router, "apply_observation", apply_observation)  # noqa: B010
        self._hooked.append((router, "apply_observation"))
        self._wrap_async(router, "update")
        if collector is not None:
            for name in COLLECTOR_METHODS:
                self._wrap_async(collector, name)

    def _wrap_async(self, target: object, name: str) -> None:
        method: Callable[..., Awaitable[Any]] = getattr(target, name)
        flush = self._flush

        @functools.wraps(method)
        async def published(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            # The call itself succeeded: failing it now would make a client retry, and an
            # `Update` is not idempotent. An unreachable store keeps the delta pending (the
            # sync loop publishes it when the store returns) and is logged by the synchronizer.
            with contextlib.suppress(Unavailable):
                await flush()
            return result

        setattr(target, name, published)
        self._hooked.append((target, name))

    def remove(self) -> None:
        for target, name in reversed(self._hooked):
            with contextlib.suppress(AttributeError):
                delattr(target, name)  # the instance attribute; the class method shows again
        self._hooked.clear()
