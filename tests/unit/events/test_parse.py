"""Parsing: every rejection reason, the ``ts`` forms and bounds, and that no input raises."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.events.hashtags import normalise_tag
from surgewatch.events.model import Post, Reason, Rejected, Signup
from surgewatch.events.parse import _new_post, _new_signup, _ts_seconds, parse_post, parse_signup
from surgewatch.events.timestamps import parse_ts

#: The processing clock of these tests: 2025-01-15T00:13:20Z.
NOW = 1_736_900_000.0
#: 2025-01-15T00:00:00Z, an event time a little before NOW.
TS = 1_736_899_200.0
#: 2000-01-01T00:00:00Z, the earliest accepted event time.
Y2K = 946_684_800.0
DROP = object()


def event(**fields: Any) -> bytes:
    """Encode a valid event with ``fields`` changed; a field given as DROP is left out."""
    base: dict[str, Any] = {"event_id": "e-1", "user_id": "u-1", "ts": TS}
    base.update(fields)
    return orjson.dumps({key: value for key, value in base.items() if value is not DROP})


def reason_of(result: Post | Signup | Rejected) -> Reason:
    assert isinstance(result, Rejected), result
    return result.reason


def parsers() -> list[Any]:
    return [pytest.param(parse_post, id="post"), pytest.param(parse_signup, id="signup")]


# ----------------------------------------------------------------------------- valid events


def test_typical_post() -> None:
    raw = event(hashtags=["TikTokRefugee", "rednote", "#RedNote"], lang="en", country="us")
    assert parse_post(raw, NOW) == Post(
        event_id="e-1",
        user_id="u-1",
        ts=TS,
        hashtags=("tiktokrefugee", "rednote"),
        lang="en",
        country="us",
    )


def test_minimal_post_has_no_hashtags_and_no_optional_fields() -> None:
    assert parse_post(event(), NOW) == Post("e-1", "u-1", TS, (), None, None)


def test_typical_signup() -> None:
    raw = event(country="cn", source="appstore", platform="ios")
    assert parse_signup(raw, NOW) == Signup("e-1", "u-1", TS, "CN", "appstore", "ios")


def test_minimal_signup_has_unknown_country() -> None:
    assert parse_signup(event(), NOW) == Signup("e-1", "u-1", TS, "unknown", None, None)


@pytest.mark.parametrize("parse", parsers())
def test_null_optional_fields_are_absent(parse: Any) -> None:
    raw = event(text=None, hashtags=None, lang=None, country=None, source=None, platform=None)
    result = parse(raw, NOW)
    assert not isinstance(result, Rejected)
    assert result.country == ("unknown" if parse is parse_signup else None)


@pytest.mark.parametrize("parse", parsers())
def test_unknown_fields_are_ignored(parse: Any) -> None:
    raw = event(extra={"nested": [1, 2, {"x": None}]}, kind="post", version=3)
    assert not isinstance(parse(raw, NOW), Rejected)


def test_fast_constructors_build_equal_frozen_objects() -> None:
    post = _new_post("e", "u", 1.5, ("a",), "en", None)
    assert post == Post("e", "u", 1.5, ("a",), "en", None)
    assert repr(post) == repr(Post("e", "u", 1.5, ("a",), "en", None))
    assert hash(post) == hash(Post("e", "u", 1.5, ("a",), "en", None))
    signup = _new_signup("e", "u", 1.5, "US", None, "web")
    assert signup == Signup("e", "u", 1.5, "US", None, "web")
    with pytest.raises(dataclasses.FrozenInstanceError):
        post.ts = 2.0  # type: ignore[misc]
    assert not hasattr(Post, "__post_init__")
    assert not hasattr(Signup, "__post_init__")


# ----------------------------------------------------------------------------- ts


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (TS, TS),
        (1_736_899_200, TS),
        (1_736_899_200.5, 1_736_899_200.5),
        (1_736_899_200_123, 1_736_899_200.123),
        (1_736_899_200_123.0, 1_736_899_200.123),
        ("2025-01-15T00:00:00Z", TS),
        ("2025-01-15T08:00:00+08:00", TS),
        ("2025-01-14T19:00:00-05:00", TS),
        ("2025-01-15T00:00:00.250Z", TS + 0.25),
        (Y2K, Y2K),
        ("2000-01-01T00:00:00Z", Y2K),
        (NOW + 86_400, NOW + 86_400),
        (int((NOW + 86_400) * 1000), NOW + 86_400),
    ],
)
def test_ts_forms(parse: Any, ts: object, expected: float) -> None:
    result = parse(event(ts=ts), NOW)
    assert not isinstance(result, Rejected), result
    assert result.ts == expected


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize(
    "ts",
    [
        Y2K - 0.001,
        "1999-12-31T23:59:59Z",
        "2000-01-01T07:59:59+08:00",
        NOW + 86_400.001,
        int((NOW + 86_400) * 1000) + 1,
        0,
        -1,
        1e11,
        "2025-01-15T00:00:00",
        "2025-01-15",
        "yesterday",
        "",
        "1736899200",
        True,
        False,
        [TS],
        {"seconds": TS},
    ],
)
def test_invalid_ts(parse: Any, ts: object) -> None:
    result = parse(event(ts=ts), NOW)
    assert result == Rejected(
        Reason.INVALID_TS,
        "field 'ts' must be seconds or milliseconds since the epoch or an ISO-8601 time with Z or "
        "an offset, between 2000-01-01 and one day after now",
    )


@settings(max_examples=500)
@given(
    st.one_of(
        st.floats(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(min_value=9e8, max_value=2e12),
        st.integers(min_value=9 * 10**8, max_value=2 * 10**12),
        st.booleans(),
        st.none(),
        st.text(max_size=45),
    ),
    st.floats(min_value=Y2K, max_value=4e9),
)
def test_number_fast_path_agrees_with_parse_ts(value: object, now_seconds: float) -> None:
    try:
        expected = parse_ts(value, now_seconds)
    except (ValueError, OverflowError):
        expected = None
    assert _ts_seconds(value, now_seconds) == expected


def test_ts_fast_path_rejects_infinity_as_parse_ts_does() -> None:
    assert _ts_seconds(math.inf, math.inf) is None
    assert _ts_seconds(math.nan, NOW) is None


# ----------------------------------------------------------------------------- required fields


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize("name", ["event_id", "user_id", "ts"])
@pytest.mark.parametrize("value", [DROP, None])
def test_missing_field(parse: Any, name: str, value: object) -> None:
    assert parse(event(**{name: value}), NOW) == Rejected(
        Reason.MISSING_FIELD, f"field '{name}' is required"
    )


@pytest.mark.parametrize("parse", parsers())
def test_missing_field_is_reported_before_an_invalid_one(parse: Any) -> None:
    assert reason_of(parse(event(event_id=5, ts=DROP), NOW)) == Reason.MISSING_FIELD


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize("name", ["event_id", "user_id"])
@pytest.mark.parametrize("value", ["", "x" * 129, "é" * 129, 5, 5.5, True, ["e"], {"id": "e"}])
def test_invalid_id(parse: Any, name: str, value: object) -> None:
    assert parse(event(**{name: value}), NOW) == Rejected(
        Reason.INVALID_FIELD,
        f"field '{name}' must be a non-empty string of at most 128 characters",
    )


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize("value", ["x", "x" * 128, "é" * 128, "话" * 128, " "])
def test_valid_ids_up_to_128_characters(parse: Any, value: str) -> None:
    result = parse(event(event_id=value, user_id=value), NOW)
    assert not isinstance(result, Rejected)
    assert (result.event_id, result.user_id) == (value, value)


# ----------------------------------------------------------------------------- the value itself


@pytest.mark.parametrize("parse", parsers())
def test_value_of_exactly_64_kib_is_accepted(parse: Any) -> None:
    padding = 65_536 - len(event(pad=""))
    raw = event(pad="x" * padding)
    assert len(raw) == 65_536
    assert not isinstance(parse(raw, NOW), Rejected)


@pytest.mark.parametrize("parse", parsers())
def test_value_over_64_kib_is_too_large(parse: Any) -> None:
    padding = 65_537 - len(event(pad=""))
    raw = event(pad="x" * padding)
    assert len(raw) == 65_537
    assert parse(raw, NOW) == Rejected(
        Reason.TOO_LARGE, "value is 65537 bytes, over the limit of 65536"
    )


@pytest.mark.parametrize("parse", parsers())
def test_size_is_checked_before_decoding(parse: Any) -> None:
    assert reason_of(parse(b"\xff" * 65_537, NOW)) == Reason.TOO_LARGE


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"{",
        b'{"event_id": "e-1",}',
        b"{'event_id': 'e-1'}",
        b'{"event_id": "e-1"} trailing',
        b"\xff\xfe{}",
        b'{"event_id": "\xff", "user_id": "u-1", "ts": 1736899200}',
        b'{"event_id": "\\ud800", "user_id": "u-1", "ts": 1736899200}',
        b'{"event_id": "e-1", "user_id": "u-1", "ts": NaN}',
        b'{"event_id": "e-1", "user_id": "u-1", "ts": Infinity}',
        b'{"event_id": "e-1", "user_id": "u-1", "ts": 1e400}',
        b"[" * 60_000,
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 1100 + b"1" + b"}" * 1100,
    ],
)
def test_invalid_json(parse: Any, raw: bytes) -> None:
    assert reason_of(parse(raw, NOW)) == Reason.INVALID_JSON


@pytest.mark.parametrize("parse", parsers())
def test_deep_but_allowed_nesting_in_an_unknown_field_is_fine(parse: Any) -> None:
    nested = b"[" * 1000 + b"]" * 1000
    raw = event()[:-1] + b',"deep":' + nested + b"}"
    assert not isinstance(parse(raw, NOW), Rejected)


@pytest.mark.parametrize("parse", parsers())
@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b"1", b"1.5", b'"post"', b"null", b"true"])
def test_not_an_object(parse: Any, raw: bytes) -> None:
    assert parse(raw, NOW) == Rejected(Reason.NOT_AN_OBJECT, "value must be a JSON object")


# ----------------------------------------------------------------------------- optional fields


@pytest.mark.parametrize(
    ("parse", "name"),
    [
        (parse_post, "text"),
        (parse_post, "lang"),
        (parse_post, "country"),
        (parse_signup, "country"),
        (parse_signup, "source"),
        (parse_signup, "platform"),
    ],
)
@pytest.mark.parametrize("value", [1, 1.5, True, ["x"], {"x": "y"}])
def test_optional_field_of_the_wrong_type(parse: Any, name: str, value: object) -> None:
    assert parse(event(**{name: value}), NOW) == Rejected(
        Reason.INVALID_FIELD, f"field '{name}' must be a string"
    )


@pytest.mark.parametrize(
    "value", ["rednote", 1, {"tag": "x"}, True, ["a", 1], ["a", None], [["a"]]]
)
def test_hashtags_of_the_wrong_type(value: object) -> None:
    assert parse_post(event(hashtags=value), NOW) == Rejected(
        Reason.INVALID_FIELD, "field 'hashtags' must be a list of strings"
    )


def test_post_keeps_lang_and_country_as_given() -> None:
    result = parse_post(event(lang="zh-Hans", country="usa"), NOW)
    assert isinstance(result, Post)
    assert (result.lang, result.country) == ("zh-Hans", "usa")


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        (DROP, "unknown"),
        (None, "unknown"),
        ("US", "US"),
        ("us", "US"),
        (" US ", "US"),
        ("cn", "CN"),
        ("XX", "unknown"),
        ("usa", "unknown"),
        ("", "unknown"),
    ],
)
def test_signup_country(country: object, expected: str) -> None:
    result = parse_signup(event(country=country), NOW)
    assert isinstance(result, Signup)
    assert result.country == expected


# ----------------------------------------------------------------------------- hashtags


def test_thirty_hashtags_are_accepted() -> None:
    tags = [f"tag{i}" for i in range(30)]
    result = parse_post(event(hashtags=tags), NOW)
    assert isinstance(result, Post)
    assert result.hashtags == tuple(tags)


@pytest.mark.parametrize(
    "tags",
    [
        [f"tag{i}" for i in range(31)],
        ["same"] * 31,
        ["a"] * 30 + [1],
    ],
    ids=["distinct", "repeated", "count-before-type"],
)
def test_more_than_thirty_hashtag_items(tags: list[object]) -> None:
    assert parse_post(event(hashtags=tags), NOW) == Rejected(
        Reason.TOO_MANY_HASHTAGS, "field 'hashtags' has 31 items, more than 30"
    )


def test_text_with_thirty_distinct_tags_is_accepted() -> None:
    text = " ".join(f"#tag{i}" for i in range(30)) + " #TAG0 ＃ｔａｇ1"
    result = parse_post(event(text=text), NOW)
    assert isinstance(result, Post)
    assert result.hashtags == tuple(f"tag{i}" for i in range(30))


def test_text_with_more_than_thirty_distinct_tags() -> None:
    text = " ".join(f"#tag{i}" for i in range(31))
    assert parse_post(event(text=text), NOW) == Rejected(
        Reason.TOO_MANY_HASHTAGS, "field 'text' has more than 30 distinct hashtags"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"hashtags": ["#TikTokRefugee", "tiktokrefugee", "＃ＴｉｋＴｏｋＲｅｆｕｇｅｅ"]},
            ("tiktokrefugee",),
        ),
        ({"text": "#TikTokRefugee tiktokrefugee ＃ＴｉｋＴｏｋＲｅｆｕｇｅｅ"}, ("tiktokrefugee",)),
        (
            {"text": "我来了 #小红书# #RedNote 🎉#TikTokRefugee🎉"},
            ("小红书", "rednote", "tiktokrefugee"),
        ),
        ({"text": 'say "#hi" \\#there\n#next'}, ("hi", "there", "next")),
        ({"text": "#a", "hashtags": []}, ()),
        ({"text": "#a", "hashtags": ["b"]}, ("b",)),
        ({"text": "#a", "hashtags": None}, ("a",)),
        ({"text": "no tags"}, ()),
        ({"hashtags": ["", "#", "ok"]}, ("ok",)),
    ],
)
def test_post_hashtags(fields: dict[str, Any], expected: tuple[str, ...]) -> None:
    result = parse_post(event(**fields), NOW)
    assert isinstance(result, Post)
    assert result.hashtags == expected


# ----------------------------------------------------------------------------- properties

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Events that get past the first checks more often than arbitrary objects do.
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=130), JSON_SCALARS),
        "user_id": st.one_of(st.text(max_size=130), JSON_SCALARS),
        "ts": st.one_of(
            st.floats(min_value=9e8, max_value=2e12),
            st.integers(min_value=9 * 10**8, max_value=2 * 10**12),
            st.just("2025-01-15T08:00:00+08:00"),
            JSON_SCALARS,
        ),
        "text": st.one_of(
            st.text(alphabet=st.sampled_from("#＃﹟aB话 🎉\n"), max_size=40), JSON_VALUES
        ),
        "hashtags": st.one_of(st.lists(st.text(max_size=6), max_size=32), JSON_VALUES),
        "lang": JSON_SCALARS,
        "country": st.one_of(st.sampled_from(["us", "XX", " cn "]), JSON_SCALARS),
        "source": JSON_SCALARS,
        "platform": JSON_SCALARS,
    },
)


def check_result(result: object, kind: type) -> None:
    """Assert ``result`` is a valid event of ``kind`` or a rejection with a contract reason."""
    if isinstance(result, Rejected):
        assert result.reason in set(Reason)
        assert result.detail
        return
    assert type(result) is kind
    assert isinstance(result, Post | Signup)
    assert 0 < len(result.event_id) <= 128
    assert 0 < len(result.user_id) <= 128
    assert 946_684_800.0 <= result.ts <= NOW + 86_400
    if isinstance(result, Post):
        assert len(result.hashtags) <= 30
        assert len(set(result.hashtags)) == len(result.hashtags)
        for tag in result.hashtags:
            assert tag
            assert not tag.startswith("#")
            assert not tag.endswith("#")
            assert tag.casefold() == tag


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check_result(parse_post(raw, NOW), Post)
    check_result(parse_signup(raw, NOW), Signup)


@settings(max_examples=300)
@given(st.one_of(JSON_VALUES, EVENTISH))
def test_arbitrary_json_never_raises(value: Any) -> None:
    for raw in (json.dumps(value).encode(), orjson.dumps(value)):
        check_result(parse_post(raw, NOW), Post)
        check_result(parse_signup(raw, NOW), Signup)


@settings(max_examples=200)
@given(
    st.lists(st.text(max_size=10), max_size=30),
    st.text(max_size=40),
)
def test_post_hashtags_are_the_distinct_normalised_items(tags: list[str], text: str) -> None:
    result = parse_post(event(hashtags=tags, text=text), NOW)
    assert isinstance(result, Post)
    assert result.hashtags == tuple(dict.fromkeys(t for t in map(normalise_tag, tags) if t))
    check_result(result, Post)
