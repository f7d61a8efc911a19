"""Event model: the parsed post and signup events, and why an input was rejected."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why an input event was rejected; the value is the ``reason`` label and DLQ header."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TS = "invalid_ts"
    TOO_LARGE = "too_large"
    TOO_MANY_HASHTAGS = "too_many_hashtags"


#: A Kafka message value larger than this is rejected before it is decoded.
MAX_VALUE_BYTES = 64 * 1024
#: Longest accepted ``event_id`` and ``user_id``.
MAX_ID_CHARS = 128
#: Most hashtags one post may carry, given or extracted from its text.
MAX_HASHTAGS = 30


@dataclass(frozen=True, slots=True)
class Post:
    """A valid post: its distinct normalised hashtags, in first-seen order."""

    event_id: str
    user_id: str
    ts: float
    hashtags: tuple[str, ...]
    lang: str | None
    country: str | None


@dataclass(frozen=True, slots=True)
class Signup:
    """A valid signup: ``country`` is an assigned ISO 3166-1 alpha-2 code or ``"unknown"``."""

    event_id: str
    user_id: str
    ts: float
    country: str
    source: str | None
    platform: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that is not counted: the reason and a short human-readable detail."""

    reason: Reason
    detail: str
