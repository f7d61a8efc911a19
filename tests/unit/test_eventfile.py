"""Event files: round trips (plain and gzip), byte determinism, bad lines named by path and line."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgewatch.eventfile import (
    EventFileError,
    EventReader,
    EventRecord,
    decode_line,
    encode_records,
    iter_events_with_errors,
    read_events,
    write_events,
)

RECORDS = [
    EventRecord(
        "posts",
        "u1",
        {"event_id": "p1", "user_id": "u1", "ts": 1736726400.25, "hashtags": ["美食"]},
    ),
    EventRecord(
        "signups", "n1", {"event_id": "s1", "user_id": "n1", "ts": "2025-01-13T15:00:01.250Z"}
    ),
    EventRecord("posts", None, "{not json"),
    EventRecord("posts", "u2", "[1, 2]"),
]


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_records_survive_a_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_events(path, RECORDS) == len(RECORDS)
    assert list(read_events(path)) == RECORDS


def test_a_gz_path_is_gzip_and_a_plain_path_is_not(tmp_path: Path) -> None:
    write_events(tmp_path / "a.jsonl.gz", RECORDS)
    write_events(tmp_path / "a.jsonl", RECORDS)
    assert (tmp_path / "a.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (
        gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes())
        == (tmp_path / "a.jsonl").read_bytes()
    )


def test_gzip_output_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    write_events(tmp_path / "one.jsonl.gz", RECORDS * 3000)
    write_events(tmp_path / "two.jsonl.gz", RECORDS * 3000)
    first = (tmp_path / "one.jsonl.gz").read_bytes()
    assert first == (tmp_path / "two.jsonl.gz").read_bytes()
    assert first[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert b"one.jsonl" not in first  # no embedded file name


def test_lines_are_compact_with_keys_in_a_fixed_order() -> None:
    lines = encode_records(RECORDS).splitlines()
    assert lines[0] == (
        b'{"stream":"posts","key":"u1","value":{"event_id":"p1","user_id":"u1",'
        b'"ts":1736726400.25,"hashtags":["\xe7\xbe\x8e\xe9\xa3\x9f"]}}'
    )
    assert lines[2] == b'{"stream":"posts","key":null,"value":"{not json"}'


def test_value_bytes_are_the_message_value() -> None:
    assert RECORDS[0].value_bytes() == orjson.dumps(RECORDS[0].value)
    assert RECORDS[2].value_bytes() == b"{not json"
    assert RECORDS[2].key_bytes() is None
    assert RECORDS[0].key_bytes() == b"u1"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"stream": "posts", "key": "u1", "value": {"a": 1}', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"stream": "likes", "key": "u1", "value": {}}', "stream must be one of"),
        (b'{"stream": "posts", "key": 7, "value": {}}', "key must be a string or null"),
        (b'{"stream": "posts", "key": "u1", "value": [1]}', "value must be an object or a string"),
        (b'{"stream": "posts", "key": "u1"}', "missing field 'value'"),
    ],
)
def test_a_bad_line_is_reported_with_path_and_line_number(
    tmp_path: Path, line: bytes, reason: str
) -> None:
    good = encode_records(RECORDS[:1])
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good + b"\n" + line + b"\n" + good)
    records = read_events(path)
    assert next(records) == RECORDS[0]
    with pytest.raises(EventFileError, match=reason) as caught:
        next(records)
    assert caught.value.line_no == 3  # the blank line 2 counts
    assert str(caught.value).startswith(f"{path}:3: ")


def test_the_lenient_reader_yields_errors_in_place_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl.gz"
    good = encode_records(RECORDS[:2]).splitlines()
    path.write_bytes(gzip.compress(b"\n".join([good[0], b"{oops", good[1], b'"x"']) + b"\n"))
    items = list(iter_events_with_errors(path))
    assert [line for line, _ in items] == [1, 2, 3, 4]
    assert items[0][1] == RECORDS[0] and items[2][1] == RECORDS[1]
    assert isinstance(items[1][1], EventFileError) and isinstance(items[3][1], EventFileError)


def test_a_truncated_gzip_file_ends_with_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    write_events(path, RECORDS * 100)
    path.write_bytes(path.read_bytes()[:-20])
    items = list(iter_events_with_errors(path))
    assert isinstance(items[-1][1], EventFileError)
    assert "unreadable" in str(items[-1][1])


def test_position_grows_to_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    write_events(path, RECORDS * 20_000)
    with EventReader(path) as reader:
        assert reader.size_bytes == path.stat().st_size
        positions = [reader.position_bytes() for _ in reader]
    assert positions == sorted(positions)
    assert positions[-1] == path.stat().st_size


def test_a_missing_file_is_an_event_file_error(tmp_path: Path) -> None:
    with pytest.raises(EventFileError, match="cannot open"):
        list(read_events(tmp_path / "nope.jsonl"))


def test_dash_reads_stdin_plain_or_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    for content in (encode_records(RECORDS), gzip.compress(encode_records(RECORDS))):
        fake = io.TextIOWrapper(io.BufferedReader(io.BytesIO(content)))
        monkeypatch.setattr(sys, "stdin", fake)
        assert list(read_events("-")) == RECORDS


def test_dash_writes_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
    assert write_events("-", RECORDS) == len(RECORDS)
    assert buffer.getvalue() == encode_records(RECORDS)


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.lists(
        st.builds(
            EventRecord,
            st.sampled_from(["posts", "signups"]),
            st.none() | st.text(max_size=12),
            st.dictionaries(st.text(max_size=8), json_values, max_size=5) | st.text(max_size=30),
        ),
        max_size=8,
    )
)
def test_any_records_round_trip_through_bytes(records: list[EventRecord]) -> None:
    lines = encode_records(records).split(b"\n")[:-1]
    assert [decode_line(line, "<memory>", n) for n, line in enumerate(lines, 1)] == records
