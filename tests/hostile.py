"""Hostile input events and what must become of them (shared by the unit and integration tests).

Each :class:`Hostile` is one Kafka message value with its expected outcome as a post and as a
signup: ``"ok"`` (accepted) or the contract's rejection reason. Values are built around an event
time ``ts`` so that the accepted ones land in a chosen window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

#: The contract's rejection reasons.
REASONS = frozenset(
    {
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "invalid_ts",
        "too_large",
        "too_many_hashtags",
    }
)
OK = "ok"
MAX_VALUE_BYTES = 64 * 1024

#: Hashtags that break naive label, key or line formats; each is a valid tag of its own.
LABEL_BREAKING_TAGS = [
    'say"hi',
    "back\\slash",
    "}",
    "{",
    "=",
    "a,b",
    "new\nline",
    "car\rriage",
    'a"} 1\nfake_metric{b="',
    "pipe|in|tag",
    "tab\there",
    "nul\x00byte",
    "del\x7f",
    "# HELP x",
    "小红书",
    "🚀",
]
#: Tags that NFKC-normalise (and strip of ``#``) to nothing: a post carrying only these has none.
EMPTY_TAGS = ["", "#", "##", "＃", "﹟", "＃＃", "#＃﹟"]
#: A tag far longer than a label may be (60,000 characters).
LONG_TAG = "l" * 60_000


@dataclass(frozen=True)
class Hostile:
    """A value, what it must be as a post and as a signup, and the post's hashtags if accepted."""

    name: str
    value: bytes
    post: str
    signup: str
    tags: tuple[str, ...] = ()


def event(ts: float, event_id: str = "e-1", **fields: Any) -> dict[str, Any]:
    """A valid event body with ``fields`` added."""
    return {"event_id": event_id, "user_id": "u-1", "ts": ts, **fields}


def with_raw_field(ts: float, name: str, raw: bytes, event_id: str = "e-1") -> bytes:
    """A valid event with one more field whose JSON text is ``raw`` (spliced in, unchecked)."""
    return orjson.dumps(event(ts, event_id))[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


def with_raw_ts(raw: bytes, event_id: str = "e-1") -> bytes:
    """An event whose ``ts`` is the JSON text ``raw``."""
    return b'{"event_id":"' + event_id.encode() + b'","user_id":"u-1","ts":' + raw + b"}"


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` with a ``pad`` field making it exactly ``size`` bytes of JSON."""
    empty = orjson.dumps({**body, "pad": ""})
    return orjson.dumps({**body, "pad": "p" * (size - len(empty))})


def corpus(ts: float, prefix: str = "h") -> list[Hostile]:
    """The hostile values, each accepted one with event time ``ts`` and a unique ``event_id``."""
    out: list[Hostile] = []

    def add(name: str, value: bytes, post: str, signup: str | None = None, tags: Any = ()) -> None:
        out.append(Hostile(name, value, post, post if signup is None else signup, tuple(tags)))

    def eid(name: str) -> str:
        return f"{prefix}-{name}"

    def body(name: str, **fields: Any) -> bytes:
        return orjson.dumps({**event(ts, eid(name)), **fields})

    valid = body("truncated")
    # --- not JSON at all, or broken JSON
    add("empty", b"", "invalid_json")
    add("random-bytes", bytes(range(256)), "invalid_json")
    add("nul", b"\x00", "invalid_json")
    add("truncated-half", valid[: len(valid) // 2], "invalid_json")
    add("truncated-last-brace", valid[:-1], "invalid_json")
    add("utf8-bom", b"\xef\xbb\xbf" + body("bom"), "invalid_json")
    add("invalid-utf8-in-string", body("bad-utf8").replace(b"u-1", b"u-\xff"), "invalid_json")
    add("overlong-utf8", body("overlong").replace(b"u-1", b"u-\xc0\xaf"), "invalid_json")
    add("utf8-encoded-surrogate", body("cesu").replace(b"u-1", b"u-\xed\xa0\x80"), "invalid_json")
    add("lone-high-surrogate", with_raw_field(ts, "x", b'"\\ud800"', eid("s1")), "invalid_json")
    add("lone-low-surrogate", with_raw_field(ts, "hashtags", b'["\\udc00"]'), "invalid_json")
    add("raw-control-char", body("ctl").replace(b"u-1", b"u-\x01"), "invalid_json")
    add("nan", with_raw_ts(b"NaN"), "invalid_json")
    add("infinity", with_raw_ts(b"Infinity"), "invalid_json")
    add("minus-infinity", with_raw_ts(b"-Infinity"), "invalid_json")
    add("1e400", with_raw_ts(b"1e400"), "invalid_json")
    add("10**400", with_raw_ts(b"1" + b"0" * 400), "invalid_json")
    add("1e400-unknown-field", with_raw_field(ts, "x", b"1e400", eid("big")), "invalid_json")
    # orjson refuses nesting deeper than 1024: a deep value is invalid JSON, never a RecursionError.
    add("deep-array", b"[" * 32_000 + b"]" * 32_000, "invalid_json")
    add("deep-object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "invalid_json")
    add("deep-in-field", with_raw_field(ts, "x", b"[" * 30_000 + b"]" * 30_000), "invalid_json")
    # --- too large (checked before decoding)
    add("64KiB+1", padded(event(ts, eid("big1")), MAX_VALUE_BYTES + 1), "too_large")
    add("100k-nested", b"[" * 100_000 + b"]" * 100_000, "too_large")
    add(
        "100k-tags-in-text", body("t", text=" ".join(f"#t{i}" for i in range(100_000))), "too_large"
    )
    add("100k-tag-items", body("t", hashtags=["a"] * 100_000), "too_large")
    # --- JSON, but not an event
    add("array", b"[]", "not_an_object")
    add("null", b"null", "not_an_object")
    add("string", b'"post"', "not_an_object")
    add("missing-user", orjson.dumps({"event_id": eid("mu"), "ts": ts}), "missing_field")
    add("id-129", body("id", event_id="e" * 129), "invalid_field")
    add("empty-user", body("eu", user_id=""), "invalid_field")
    add("hashtags-not-list", body("hnl", hashtags="#a"), "invalid_field", OK)
    add("hashtag-not-str", body("hns", hashtags=["a", 1]), "invalid_field", OK)
    add("country-not-str", body("cns", country=5), "invalid_field")
    add("ts-minus-zero", with_raw_ts(b"-0"), "invalid_ts")
    add("ts-1e308", with_raw_ts(b"1e308"), "invalid_ts")
    add("ts-2**64", with_raw_ts(b"18446744073709551616"), "invalid_ts")
    add("ts-1e-400", with_raw_ts(b"1e-400"), "invalid_ts")
    add("ts-bool", with_raw_ts(b"true"), "invalid_ts")
    add("ts-text", body("tt", ts="yesterday"), "invalid_ts")
    add("ts-year-9999", body("ty", ts="9999-12-31T23:59:59-23:59"), "invalid_ts")
    # --- too many hashtags (a signup ignores the fields)
    add("31-items", body("31", hashtags=[f"t{i}" for i in range(31)]), "too_many_hashtags", OK)
    add("10k-same-items", body("10k", hashtags=["a"] * 10_000), "too_many_hashtags", OK)
    text_tags = " ".join(f"#{i}" for i in range(10_000))
    add("10k-tags-in-text", body("10kt", text=text_tags), "too_many_hashtags", OK)
    # --- accepted, however odd
    add("exactly-64KiB", padded(event(ts, eid("64k")), MAX_VALUE_BYTES), OK)
    add("deep-1000-in-field", with_raw_field(ts, "x", b"[" * 1000 + b"]" * 1000, eid("d1k")), OK)
    lbt = [tag.strip("#").casefold() for tag in LABEL_BREAKING_TAGS]  # each NFKC-stable
    add("label-breaking-tags", body("lbt", hashtags=LABEL_BREAKING_TAGS), OK, tags=lbt)
    add("nfkc-empty-tags", body("nfkc", hashtags=EMPTY_TAGS), OK)
    add("nfkc-empty-in-text", body("nfkct", text="# ＃ ﹟ ## #＃﹟ #"), OK)
    add("long-tag", body("long", hashtags=[LONG_TAG]), OK, tags=[LONG_TAG])
    add("10k-same-tag-in-text", body("same", text="#Same " * 10_000), OK, tags=["same"])
    add("hash-signs-only", body("hashes", text="#" * 60_000), OK)
    add(
        "surrogate-pair",
        with_raw_field(ts, "hashtags", b'["\\ud83d\\ude80"]', eid("pair")),
        OK,
        tags=["🚀"],
    )
    add(
        "escaped-controls",
        body("esc", hashtags=["\x00", "\x1f", "\u2028"]),
        OK,
        tags=["\x00", "\x1f", "\u2028"],
    )
    add("country-label-breaking", body("clb", country='"}\n'), OK)
    add("duplicate-keys", body("dup")[:-1] + b',"ts":"not a time"}', "invalid_ts")
    add(
        "unknown-fields",
        with_raw_field(ts, "extra", b'{"a":[null,true,-0.0,1e-300]}', eid("unk")),
        OK,
    )
    assert all(h.post in REASONS | {OK} and h.signup in REASONS | {OK} for h in out)
    assert len({h.name for h in out}) == len(out)
    return out
