"""Idempotency mark keys: which signals count as the same one (ARCHITECTURE "Mark keys").

A mark is scoped to one query; its key names the signal:
  signal:{type}                           an event without an idempotency key
  key:{idempotency_key}                   an event with one
  session.{len(sid)}:{sid}:signal:{type}  a session signal without an idempotency key
  session.{len(sid)}:{sid}:key:{key}      a session signal with one
  track                                   Track (counts once per query)
"""

from __future__ import annotations

from conduit_sidecar.feedback.events import FeedbackEvent, SessionFeedback


def event_key(event: FeedbackEvent) -> str:
    if event.idempotency_key is not None:
        return f"key:{event.idempotency_key}"
    return f"signal:{event.signal_type}"


def session_keys(feedback: SessionFeedback) -> tuple[str, str]:
    """The mark key of a session signal, and the key the previous version used for it.

    `session:{sid}:{key or signal type}` made an explicit key equal to a signal type name
    (key "thumbs" vs an un-keyed thumbs signal) the same signal, and a session id holding
    ':' ambiguous. The new key says which of the two it is and the session id's length.
    The old one is still checked (a retry of a signal stored before the upgrade stays a
    duplicate) until the queries it marked have expired.
    """
    sid = feedback.session_id
    if feedback.idempotency_key is not None:
        key = f"session.{len(sid)}:{sid}:key:{feedback.idempotency_key}"
    else:
        key = f"session.{len(sid)}:{sid}:signal:{feedback.signal_type}"
    legacy = f"session:{sid}:{feedback.idempotency_key or feedback.signal_type}"
    return key, legacy
