"""Builds the domain the sidecar serves from a SidecarConfig: Router, store, FeedbackCollector.

Transport-neutral: nothing here knows about gRPC, so an embedding application can build the
same objects from the same configuration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import ConfigError, SidecarConfig
from .errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from .feedback import FeedbackCollector, FeedbackStore
    from .router import Router
    from .sync.synchronizer import PolicySynchronizer

log = logging.getLogger("conduit_sidecar.app")
# How long close() waits for store writes whose callers are gone (SQLite's busy timeout is
# 10 s); only a store that hangs past its own timeouts makes shutdown wait this long.
SETTLE_TIMEOUT_S = 15.0
# How long close() spends, once, settling the collector's writes in doubt (each store call
# is bounded by the store's own timeout; this bounds the whole pass over the ledger).
RESOLVE_IN_DOUBT_TIMEOUT_S = 5.0
# How long closing a store may take at shutdown (a flush of buffered SQLite writes waits up
# to its 10 s busy timeout). A connection pool waits for its connections forever, and one
# stuck on an unresponsive server (a network partition) never comes back.
STORE_CLOSE_TIMEOUT_S = 15.0


def sqlite_path(store_url: str) -> Path:
    """`sqlite:///rel/path` is relative to the working directory, `sqlite:////abs` absolute
    (SQLAlchemy's convention); the parent directory is created if missing."""
    path = Path(store_url[len("sqlite:///") :])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # name the setting, not only the path
        raise OSError(f"store_url: cannot create {path.parent}: {exc.strerror}") from None
    return path


def build_store(config: SidecarConfig) -> FeedbackStore:
    """The feedback store named by `config.store_url` (not yet initialised)."""
    scheme = config.store_scheme
    if scheme == "memory":
        from .feedback import InMemoryFeedbackStore

        return InMemoryFeedbackStore(config.max_pending, ttl_seconds=config.ttl_s)
    if scheme == "sqlite":
        from .feedback import SqliteFeedbackStore

        synchronous: Literal["FULL", "NORMAL"] = (
            "NORMAL" if config.sqlite_synchronous == "NORMAL" else "FULL"
        )
        durability: Literal["buffered", "commit"] = (
            "commit" if config.sqlite_decision_durability == "commit" else "buffered"
        )
        return SqliteFeedbackStore(
            str(sqlite_path(config.store_url)),
            ttl_seconds=config.ttl_s,
            synchronous=synchronous,
            decision_durability=durability,
        )
    if scheme in ("redis", "rediss"):
        from redis.asyncio import Redis

        from .feedback import RedisFeedbackStore

        # state_namespace separates every key of two sidecar groups sharing one server,
        # feedback included: client-chosen session ids would otherwise meet across them.
        try:
            client = Redis.from_url(config.store_url)
        except ValueError as exc:  # the URL parser's (a port that is no number, out of range)
            raise _malformed(config.store_url, exc) from None
        return RedisFeedbackStore(
            client,
            prefix=f"{config.state_namespace}:",
            ttl_seconds=config.ttl_s,
        )
    if scheme in ("postgresql", "postgres"):
        from .feedback import PostgresFeedbackStore

        return PostgresFeedbackStore(
            database_url=config.store_url,
            schema=config.state_namespace,
            ttl_seconds=config.ttl_s,
        )
    raise ConfigError(f"store_url: unsupported scheme {scheme!r}")


def build_router(config: SidecarConfig) -> Router:
    from .models import load_catalogue
    from .router import Router

    models: Any = None
    if config.catalogue:
        try:
            models = load_catalogue(config.catalogue)
        except InvalidArgument as exc:  # a usage error (exit 2) naming the setting
            raise ConfigError(f"catalogue: {exc}") from None
        except UnicodeDecodeError as exc:  # load_catalogue reads the file as UTF-8 text
            raise ConfigError(
                f"catalogue: {config.catalogue!r} is not UTF-8 text: {exc.reason}"
            ) from None
    try:
        return Router(
            models,
            policy=config.policy,
            feature_dim=config.feature_dim,
            reward_weights=config.preference,
            seed=config.seed,
        )
    except InvalidArgument as exc:  # e.g. a seed or feature_dim the core refuses: exit 2
        raise ConfigError(str(exc)) from None


@dataclass
class SidecarApp:
    """The domain objects of one sidecar, built and torn down together."""

    config: SidecarConfig
    router: Router
    store: FeedbackStore
    collector: FeedbackCollector
    # Policy snapshots and replica sync (None for memory://, where nothing can survive).
    synchronizer: PolicySynchronizer | None = None

    @classmethod
    async def create(cls, config: SidecarConfig) -> SidecarApp:
        """Builds everything and initialises the store (creating tables if needed).

        An unreachable store raises `Unavailable` naming the URL (without credentials), so
        the sidecar fails at start rather than on the first call.
        """
        from .feedback import FeedbackCollector
        from .feedback.adapters import builtin_adapters

        router = build_router(config)
        store = build_store(config)
        try:
            await store.initialize()
        except (OSError, ConnectionError, TimeoutError) as exc:
            await store.close()
            raise Unavailable(
                f"store_url: cannot reach {_redacted(config.store_url)}: {exc}"
            ) from exc
        except Exception as exc:
            await store.close()
            if type(exc) is ValueError:
                # asyncpg parses the URL only when its pool first connects.
                raise _malformed(config.store_url, exc) from None
            if type(exc).__module__.split(".")[0] in ("redis", "asyncpg"):
                raise Unavailable(
                    f"store_url: cannot reach {_redacted(config.store_url)}: {exc}"
                ) from exc
            if isinstance(exc, Unavailable) and not str(exc).startswith("store_url: "):
                # The store's own refusal (SQLite: "file is not a database") names the path;
                # say which setting it came from.
                raise Unavailable(f"store_url: {exc}") from exc
            raise
        collector = FeedbackCollector(router, store=store)
        for adapter in builtin_adapters():
            collector.register_adapter(adapter)
        app = cls(config=config, router=router, store=store, collector=collector)
        if config.store_scheme != "memory":
            try:
                app.synchronizer = await start_synchronizer(config, router, collector)
            except BaseException:
                await store.close()
                raise
        return app

    async def close(self) -> None:
        """Lets feedback writes already under way finish, settles writes in doubt, publishes
        the last policy delta and snapshot, then closes the stores."""
        await self._settle_feedback()
        await self._resolve_in_doubt()
        if self.synchronizer is not None:
            try:
                await self.synchronizer.stop()
            finally:
                await _bounded_close(self.synchronizer.store.close(), "the policy state store")
        await _bounded_close(self.store.close(), "the feedback store")

    async def _settle_feedback(self) -> None:
        """Waits for the collector's store writes whose caller was cancelled.

        A handler still running when the server's grace period ends is cancelled, but its
        store write and policy update go on in a shielded task (FeedbackCollector): the write
        may commit. Publishing the last delta before that task has updated the policy lost
        the signal's learning while the store kept it marked (a retry is a duplicate).
        """
        late = await self.collector.settle(SETTLE_TIMEOUT_S)
        if late:
            log.error(
                "%d feedback write(s) still waiting on the store after %.0fs; their learning "
                "may be lost",
                late,
                SETTLE_TIMEOUT_S,
            )

    async def _resolve_in_doubt(self) -> None:
        """One bounded try at the collector's writes in doubt, before the last delta is
        published.

        They are otherwise settled in the background after the next write that works; at
        shutdown there is no next write, and a write that landed unnoticed (its mark kept,
        so the client's retry is a duplicate) would lose its learning for good. A store
        still unreachable is logged, not raised: the shutdown goes on.
        """
        doubts = len(self.collector.in_doubt)
        if not doubts:
            return
        try:
            # One pass over the whole ledger (it is bounded by MAX_IN_DOUBT).
            settled = await asyncio.wait_for(
                self.collector.resolve_in_doubt(batch=doubts), RESOLVE_IN_DOUBT_TIMEOUT_S
            )
        except TimeoutError:
            log.warning(
                "settling %d feedback write(s) in doubt took over %.0fs; the learning of "
                "those that took effect is lost",
                doubts,
                RESOLVE_IN_DOUBT_TIMEOUT_S,
            )
            return
        except Exception:
            log.exception("settling %d feedback write(s) in doubt failed", doubts)
            return
        left = len(self.collector.in_doubt)
        if left:
            log.warning(
                "%d of %d feedback write(s) in doubt could not be settled at shutdown (the "
                "store did not answer, or they have not landed); the learning of those that "
                "took effect is lost",
                left,
                doubts,
            )
        elif settled:
            log.info("settled %d feedback write(s) in doubt at shutdown", settled)


async def start_synchronizer(
    config: SidecarConfig, router: Router, collector: FeedbackCollector
) -> PolicySynchronizer:
    """Restores the learned policy from the store and starts exchanging deltas.

    Raises `Unavailable` if the store cannot be reached and `IncompatibleSnapshot` (whose
    message tells the operator what to do) if it holds state from other feature settings.
    """
    from .sync.state_store import open_state_store
    from .sync.synchronizer import PolicySynchronizer

    state = open_state_store(
        config.store_url,
        namespace=config.state_namespace,
        sqlite_synchronous=config.sqlite_synchronous,
    )
    try:
        await state.initialize()
        synchronizer = PolicySynchronizer(
            router,
            state,
            sync_interval_s=config.sync_interval_s,
            snapshot_interval_s=config.snapshot_interval_s,
            collector=collector,
        )
        await synchronizer.start()
    except BaseException:
        await state.close()
        raise
    return synchronizer


async def _bounded_close(closing: Awaitable[None], what: str) -> None:
    try:
        await asyncio.wait_for(closing, STORE_CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.error(
            "closing %s took over %.0fs (its server does not answer); exiting without it",
            what,
            STORE_CLOSE_TIMEOUT_S,
        )
    except Exception:
        # The policy state store closes first: its failure must not keep the feedback
        # store from flushing its buffered decisions, nor turn a shutdown into a traceback.
        log.exception("closing %s failed", what)


def _malformed(url: str, exc: ValueError) -> ConfigError:
    """A usage error (exit 2) naming store_url, for a URL its client library cannot parse."""
    message = str(exc)
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    if password:
        message = message.replace(password, "***")
    return ConfigError(f"store_url: {_redacted(url)} is malformed: {message}")


def _redacted(url: str) -> str:
    """The URL without a password (never log credentials)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else f"{scheme}://{user}@{host}"
