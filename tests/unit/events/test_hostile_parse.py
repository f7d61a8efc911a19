"""Hostile input to the parser: every value gets its contract verdict and nothing ever raises.

The examples come from ``tests/hostile.py``; hypothesis then mutates them (truncation, spliced and
flipped bytes, JSON with lone surrogates, huge numbers and deep nesting), and atheris runs a
bounded coverage-guided session of ``tests/unit/events/atheris_target.py`` when it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surgewatch.events.model import MAX_VALUE_BYTES, Post, Reason, Rejected, Signup
from surgewatch.events.parse import _loads, parse_post, parse_signup
from tests.hostile import OK, REASONS, corpus

#: The processing clock: 2025-01-15T00:13:20Z.
NOW = 1_736_900_000.0
#: An event time a little before NOW.
TS = 1_736_899_200.0
CORPUS = corpus(TS)
#: The longest detail a dead letter's ``detail`` header gets (orjson's message and position).
MAX_DETAIL_BYTES = 300
TARGET = Path(__file__).with_name("atheris_target.py")
#: Fixed examples, no example database, no time limit per example: the same run everywhere.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def verdict(result: Post | Signup | Rejected) -> str:
    return result.reason.value if isinstance(result, Rejected) else OK


def check(raw: bytes) -> tuple[Post | Rejected, Signup | Rejected]:
    """Parse ``raw`` both ways; assert each result is a valid event or a contract rejection."""
    post, signup = parse_post(raw, NOW), parse_signup(raw, NOW)
    for result, kind in ((post, Post), (signup, Signup)):
        if isinstance(result, Rejected):
            assert result.reason in set(Reason)
            assert result.reason.value in REASONS
            # The detail travels as a Kafka header: UTF-8, short.
            assert 0 < len(result.detail.encode()) <= MAX_DETAIL_BYTES, result.detail
            assert (result.reason is Reason.TOO_LARGE) == (len(raw) > MAX_VALUE_BYTES)
        else:
            assert type(result) is kind
            assert 0 < len(result.event_id) <= 128 and 0 < len(result.user_id) <= 128
            assert 946_684_800.0 <= result.ts <= NOW + 86_400
            assert len(raw) <= MAX_VALUE_BYTES
    if isinstance(post, Post):
        assert len(post.hashtags) <= 30
        assert len(set(post.hashtags)) == len(post.hashtags)
        assert all(tag and tag[0] != "#" and tag[-1] != "#" for tag in post.hashtags)
    # The envelope is checked the same way for both streams.
    envelope = {"invalid_json", "not_an_object", "missing_field", "invalid_ts", "too_large"}
    if verdict(post) in envelope or verdict(signup) in envelope:
        assert verdict(post) == verdict(signup)
    return post, signup  # type: ignore[return-value]


# --- the corpus, value by value ------------------------------------------------------------


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_each_hostile_value_gets_its_contract_verdict(hostile: Any) -> None:
    post, signup = check(hostile.value)
    assert (verdict(post), verdict(signup)) == (hostile.post, hostile.signup)
    if isinstance(post, Post):
        assert post.hashtags == hostile.tags


def test_the_corpus_covers_every_reason_and_acceptance() -> None:
    assert {h.post for h in CORPUS} == REASONS | {OK}
    assert {h.signup for h in CORPUS} == (REASONS - {"too_many_hashtags"}) | {OK}


def test_the_decoder_refuses_100k_nested_arrays_without_recursion() -> None:
    # The size limit stops 100k levels before decoding; should the limit ever grow, the decoder
    # must still refuse them with its own error, not a RecursionError.
    deep = b"[" * 100_000 + b"]" * 100_000
    assert verdict(parse_post(deep, NOW)) == "too_large"
    for raw in (deep, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"[" * 100_000):
        with pytest.raises(orjson.JSONDecodeError):
            _loads(raw)


# --- mutations of the corpus ---------------------------------------------------------------

VALUES = [h.value for h in CORPUS]
# JSON text of numbers that break naive readers.
NUMBERS = [b"1e400", b"-1e400", b"1" + b"0" * 400, b"-0", b"-0.0", b"NaN", b"Infinity",
           b"-Infinity", b"1e-400", b"18446744073709551616", b"-9223372036854775809",
           b"1.7976931348623157e309", b"0x10", b"01", b"1.", b".5", b"1e", b"+1"]  # fmt: skip
ESCAPES = [b'"\\ud800"', b'"\\udfff"', b'"\\ud800\\u0041"', b'"\\u0000"', b'"\\x41"',
           b'"\\uZZZZ"', b'"\\', b'"\xff"', b'"\xed\xa0\x80"', b'"\x01"']  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus value cut, spliced or flipped somewhere."""
    raw = draw(st.sampled_from(VALUES))
    at = draw(st.integers(0, len(raw)))
    how = draw(st.sampled_from(["cut", "insert", "flip", "splice-token", "double"]))
    if how == "cut":
        return raw[:at]
    if how == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if how == "flip":
        if not raw:
            return raw
        at = min(at, len(raw) - 1)
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if how == "splice-token":
        return raw[:at] + draw(st.sampled_from(NUMBERS + ESCAPES)) + raw[at:]
    return raw + raw


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutated()))
def test_random_and_mutated_bytes_get_a_verdict(raw: bytes) -> None:
    check(raw)


# --- structured hostile events -------------------------------------------------------------

HOSTILE_TEXT = st.text(st.characters(exclude_categories=[]), max_size=40)  # lone surrogates too
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**420), max_value=10**420),
    st.floats(),  # NaN and infinities, which json.dumps writes as NaN, Infinity
    HOSTILE_TEXT,
)
VALUES_TREE = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(HOSTILE_TEXT, children),
    max_leaves=8,
)
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.just("e-1"), HOSTILE_TEXT, SCALARS),
        "user_id": st.one_of(st.just("u-1"), HOSTILE_TEXT, SCALARS),
        "ts": st.one_of(st.just(TS), st.just(TS * 1000), st.just("2025-01-15T00:00:00Z"), SCALARS),
        "text": st.one_of(HOSTILE_TEXT.map(lambda s: "#" + s), VALUES_TREE),
        "hashtags": st.one_of(st.lists(HOSTILE_TEXT, max_size=40), VALUES_TREE),
        "country": st.one_of(st.just("us"), HOSTILE_TEXT, SCALARS),
        "extra": VALUES_TREE,
    },
)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """An event with hostile fields, as JSON written by Python (escapes, NaN) or nested deep."""
    body = draw(EVENTS)
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    depth = draw(st.sampled_from([0, 0, 1000, 1025, 30_000]))
    if depth and raw.startswith(b"{"):
        raw = raw[:-1] + (b"," if len(raw) > 2 else b"") + b'"deep":'
        raw += b"[" * depth + b"]" * depth + b"}"
    return raw


@FUZZ
@given(structured())
def test_structured_hostile_events_get_a_verdict(raw: bytes) -> None:
    post, _ = check(raw)
    if b'"deep":' + b"[" * 1025 in raw and len(raw) <= MAX_VALUE_BYTES:
        assert verdict(post) == "invalid_json"


@FUZZ
@given(
    count=st.sampled_from([31, 1000, 10_000, 100_000]),
    where=st.sampled_from(["text", "hashtags"]),
    distinct=st.booleans(),
)
def test_thousands_of_hashtags_are_rejected_by_count_or_size(
    count: int, where: str, distinct: bool
) -> None:
    tags = [f"t{i}" if distinct else "t" for i in range(count)]
    value: Any = " ".join("#" + tag for tag in tags) if where == "text" else tags
    raw = orjson.dumps({"event_id": "e", "user_id": "u", "ts": TS, where: value})
    post, signup = check(raw)
    if len(raw) > MAX_VALUE_BYTES:
        expected = "too_large"
    elif where == "hashtags" or distinct:
        expected = "too_many_hashtags"
    else:
        expected = OK  # one tag written many times counts once
    assert verdict(post) == expected
    assert verdict(signup) == ("too_large" if expected == "too_large" else OK)


# --- atheris ---------------------------------------------------------------------------------

ATHERIS_RUNS = 20_000
ATHERIS_MAX_LEN = 4096


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris not installed (Linux x86-64 wheels, CPython 3.11-3.14; `pip install -e .[dev]`)",
)
def test_bounded_atheris_run_finds_no_crash(tmp_path: Path) -> None:
    """A fixed-seed libFuzzer session over the parser and ingest; any exception is a crash.

    The corpus values small enough to be inputs seed it, so mutations start from real events.
    """
    seeds, artifacts = tmp_path / "seeds", tmp_path / "artifacts"
    seeds.mkdir()
    artifacts.mkdir()
    for index, hostile in enumerate(CORPUS):
        if len(hostile.value) <= ATHERIS_MAX_LEN:
            (seeds / f"seed-{index:03d}").write_bytes(hostile.value)
    done = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-runs={ATHERIS_RUNS}",
            "-seed=1",
            f"-max_len={ATHERIS_MAX_LEN}",
            "-len_control=0",
            "-max_total_time=60",
            f"-artifact_prefix={artifacts}/",
            str(seeds),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[3],
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"Done {ATHERIS_RUNS} runs" in output, output[-3000:]
    assert not list(artifacts.iterdir()), "atheris left a crash artifact"
