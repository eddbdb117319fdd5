"""Feedback integration: signals in, policy updates out (spec: FEEDBACK_INTEGRATION.md).

`from conduit_sidecar.feedback import FeedbackCollector, FeedbackEvent, ...` exposes every name
the spec uses, plus `builtin_adapters()` (all five built-ins; only `ThumbsAdapter` is
registered by default). Importing the package contacts no server: the Redis store talks
through the client it is given, and the PostgreSQL store imports asyncpg and connects only in
`initialize()` (or on first use).
"""

from __future__ import annotations

from conduit_sidecar.feedback.adapters import (
    FeedbackAdapter,
    QualityScoreAdapter,
    RatingAdapter,
    RegenerationAdapter,
    TaskSuccessAdapter,
    ThumbsAdapter,
    builtin_adapters,
)
from conduit_sidecar.feedback.collector import FeedbackCollector
from conduit_sidecar.feedback.events import (
    FeedbackEvent,
    FeedbackResult,
    RewardMapping,
    SessionFeedback,
)
from conduit_sidecar.feedback.stores.base import FeedbackStore
from conduit_sidecar.feedback.stores.memory import InMemoryFeedbackStore
from conduit_sidecar.feedback.stores.postgres import PostgresFeedbackStore
from conduit_sidecar.feedback.stores.redis import RedisFeedbackStore
from conduit_sidecar.feedback.stores.sqlite import SqliteFeedbackStore

__all__ = [
    "FeedbackAdapter",
    "FeedbackCollector",
    "FeedbackEvent",
    "FeedbackResult",
    "FeedbackStore",
    "InMemoryFeedbackStore",
    "PostgresFeedbackStore",
    "QualityScoreAdapter",
    "RatingAdapter",
    "RedisFeedbackStore",
    "RegenerationAdapter",
    "RewardMapping",
    "SessionFeedback",
    "SqliteFeedbackStore",
    "TaskSuccessAdapter",
    "ThumbsAdapter",
    "builtin_adapters",
]
