"""Parsing: turning one Kafka message value into a ``Post``, a ``Signup`` or a ``Rejected``.

Runs once per event in the hot path: the common case takes no detour, and every rejection is
one of the seven contract reasons; no input makes these functions raise.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import orjson

from surgewatch.events.countries import UNKNOWN_COUNTRY, normalise_country
from surgewatch.events.hashtags import extract_hashtags_at_most, hashtags_of
from surgewatch.events.model import (
    MAX_HASHTAGS,
    MAX_ID_CHARS,
    MAX_VALUE_BYTES,
    Post,
    Reason,
    Rejected,
    Signup,
)
from surgewatch.events.timestamps import (
    MAX_FUTURE_SECONDS,
    MILLIS_THRESHOLD,
    MIN_TS_SECONDS,
    parse_ts,
)

_loads = orjson.loads
_INFINITY = math.inf
_JSONDecodeError = orjson.JSONDecodeError

# Rejected is frozen, so the fixed rejections are built once and shared.
_NOT_AN_OBJECT = Rejected(Reason.NOT_AN_OBJECT, "value must be a JSON object")
_MISSING = {
    name: Rejected(Reason.MISSING_FIELD, f"field '{name}' is required")
    for name in ("event_id", "user_id", "ts")
}
_INVALID_ID = {
    name: Rejected(
        Reason.INVALID_FIELD,
        f"field '{name}' must be a non-empty string of at most {MAX_ID_CHARS} characters",
    )
    for name in ("event_id", "user_id")
}
_NOT_A_STRING = {
    name: Rejected(Reason.INVALID_FIELD, f"field '{name}' must be a string")
    for name in ("text", "lang", "country", "source", "platform")
}
_NOT_A_TAG_LIST = Rejected(Reason.INVALID_FIELD, "field 'hashtags' must be a list of strings")
_INVALID_TS = Rejected(
    Reason.INVALID_TS,
    "field 'ts' must be seconds or milliseconds since the epoch or an ISO-8601 time with Z or "
    "an offset, between 2000-01-01 and one day after now",
)
_TOO_MANY_IN_TEXT = Rejected(
    Reason.TOO_MANY_HASHTAGS, f"field 'text' has more than {MAX_HASHTAGS} distinct hashtags"
)


# A frozen dataclass's __init__ sets each field through object.__setattr__, which costs about as
# much as decoding the JSON. Setting the slots through their descriptors builds an equal object
# (there is no __post_init__) in a third of the time. Unpacking fails at import if fields change.
_new_object = object.__new__
_set_post_fields = tuple(getattr(Post, field.name).__set__ for field in fields(Post))
(_set_p_event_id, _set_p_user_id, _set_p_ts, _set_p_hashtags, _set_p_lang, _set_p_country) = (
    _set_post_fields
)
_set_signup_fields = tuple(getattr(Signup, field.name).__set__ for field in fields(Signup))
(_set_s_event_id, _set_s_user_id, _set_s_ts, _set_s_country, _set_s_source, _set_s_platform) = (
    _set_signup_fields
)


def _new_post(
    event_id: str,
    user_id: str,
    ts: float,
    hashtags: tuple[str, ...],
    lang: str | None,
    country: str | None,
) -> Post:
    """Return ``Post(event_id, user_id, ts, hashtags, lang, country)``, built faster."""
    post: Post = _new_object(Post)
    _set_p_event_id(post, event_id)
    _set_p_user_id(post, user_id)
    _set_p_ts(post, ts)
    _set_p_hashtags(post, hashtags)
    _set_p_lang(post, lang)
    _set_p_country(post, country)
    return post


def _new_signup(
    event_id: str,
    user_id: str,
    ts: float,
    country: str,
    source: str | None,
    platform: str | None,
) -> Signup:
    """Return ``Signup(event_id, user_id, ts, country, source, platform)``, built faster."""
    signup: Signup = _new_object(Signup)
    _set_s_event_id(signup, event_id)
    _set_s_user_id(signup, user_id)
    _set_s_ts(signup, ts)
    _set_s_country(signup, country)
    _set_s_source(signup, source)
    _set_s_platform(signup, platform)
    return signup


def _ts_seconds(value: object, now_seconds: float) -> float | None:
    """Return ``parse_ts(value, now_seconds)``, reading a number without the call.

    A number is the common case, so the number rule of ``parse_ts`` is applied here directly
    (a unit test checks that both agree); any other value goes to ``parse_ts``.
    """
    try:
        if type(value) is float or type(value) is int:
            seconds = value / 1000.0 if value > MILLIS_THRESHOLD else float(value)
            if (
                MIN_TS_SECONDS <= seconds <= now_seconds + MAX_FUTURE_SECONDS
                and seconds < _INFINITY
            ):
                return seconds
            return None
        return parse_ts(value, now_seconds)
    except (ValueError, OverflowError):
        # No JSON value makes parse_ts raise that we know of; this keeps the promise that no input
        # raises should a datetime corner case slip through.
        return None


def _envelope(raw: bytes, now_seconds: float) -> tuple[dict[str, Any], str, str, float] | Rejected:
    """Return the JSON object in ``raw`` with its valid ``event_id``, ``user_id`` and ``ts``.

    Otherwise return why not: too large, not JSON, not an object, a required field missing or
    invalid, in that order of checking.
    """
    if len(raw) > MAX_VALUE_BYTES:
        return Rejected(
            Reason.TOO_LARGE, f"value is {len(raw)} bytes, over the limit of {MAX_VALUE_BYTES}"
        )
    try:
        obj = _loads(raw)
    except _JSONDecodeError as exc:
        # Also raised for invalid UTF-8, non-finite numbers and nesting deeper than 1024.
        return Rejected(Reason.INVALID_JSON, f"value is not UTF-8 JSON: {exc}")
    if type(obj) is not dict:
        return _NOT_AN_OBJECT
    event_id = obj.get("event_id")
    user_id = obj.get("user_id")
    ts_value = obj.get("ts")
    if event_id is None:
        return _MISSING["event_id"]
    if user_id is None:
        return _MISSING["user_id"]
    if ts_value is None:
        return _MISSING["ts"]
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_CHARS:
        return _INVALID_ID["event_id"]
    if type(user_id) is not str or not 0 < len(user_id) <= MAX_ID_CHARS:
        return _INVALID_ID["user_id"]
    ts = _ts_seconds(ts_value, now_seconds)
    if ts is None:
        return _INVALID_TS
    return obj, event_id, user_id, ts


def parse_post(raw: bytes, now_seconds: float) -> Post | Rejected:
    """Return the post in the Kafka message value ``raw``, or why it is rejected.

    ``now_seconds`` is the processing clock, which bounds how far ahead ``ts`` may be.
    """
    envelope = _envelope(raw, now_seconds)
    if isinstance(envelope, Rejected):
        return envelope
    obj, event_id, user_id, ts = envelope
    text = obj.get("text")
    if text is not None and type(text) is not str:
        return _NOT_A_STRING["text"]
    lang = obj.get("lang")
    if lang is not None and type(lang) is not str:
        return _NOT_A_STRING["lang"]
    country = obj.get("country")
    if country is not None and type(country) is not str:
        return _NOT_A_STRING["country"]
    raw_tags = obj.get("hashtags")
    hashtags: tuple[str, ...]
    if raw_tags is not None:
        if type(raw_tags) is not list:
            return _NOT_A_TAG_LIST
        if len(raw_tags) > MAX_HASHTAGS:
            return Rejected(
                Reason.TOO_MANY_HASHTAGS,
                f"field 'hashtags' has {len(raw_tags)} items, more than {MAX_HASHTAGS}",
            )
        for item in raw_tags:
            if type(item) is not str:
                return _NOT_A_TAG_LIST
        hashtags = hashtags_of(raw_tags)
    elif text is not None:
        extracted = extract_hashtags_at_most(text, MAX_HASHTAGS)
        if extracted is None:
            return _TOO_MANY_IN_TEXT
        hashtags = tuple(extracted)
    else:
        hashtags = ()
    return _new_post(event_id, user_id, ts, hashtags, lang, country)


def parse_signup(raw: bytes, now_seconds: float) -> Signup | Rejected:
    """Return the signup in the Kafka message value ``raw``, or why it is rejected.

    ``now_seconds`` is the processing clock, which bounds how far ahead ``ts`` may be.
    """
    envelope = _envelope(raw, now_seconds)
    if isinstance(envelope, Rejected):
        return envelope
    obj, event_id, user_id, ts = envelope
    raw_country = obj.get("country")
    country: str
    if raw_country is None:
        country = UNKNOWN_COUNTRY
    elif type(raw_country) is str:
        country = normalise_country(raw_country)
    else:
        return _NOT_A_STRING["country"]
    source = obj.get("source")
    if source is not None and type(source) is not str:
        return _NOT_A_STRING["source"]
    platform = obj.get("platform")
    if platform is not None and type(platform) is not str:
        return _NOT_A_STRING["platform"]
    return _new_signup(event_id, user_id, ts, country, source, platform)
