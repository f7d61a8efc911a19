"""Replay's pure options: shifting a ``ts`` in its own format, cutting a range, and giving records
without a readable ``ts`` the time of their neighbours."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgewatch.eventfile import EventFileError, EventRecord
from surgewatch.events.timestamps import parse_ts
from surgewatch.replay import in_range, rebased, shift_ts, timed_records

NOW = 2_000_000_000.0
T0 = datetime(2025, 1, 13, 14, tzinfo=UTC).timestamp()
DAY = 86_400


@pytest.mark.parametrize(
    ("ts", "offset", "shifted"),
    [
        (1_736_776_800, 60, 1_736_776_860),
        (1_736_776_800.25, 60, 1_736_776_860.25),
        (1_736_776_800_250, 60, 1_736_776_860_250),
        (1_736_776_800_250.0, -1, 1_736_776_799_250.0),
        ("2025-01-13T14:00:02.250Z", 3_600, "2025-01-13T15:00:02.250Z"),
        ("2025-01-13T14:00:02Z", DAY, "2025-01-14T14:00:02Z"),
        ("2025-01-13T22:00:02.5+08:00", 7_200, "2025-01-14T00:00:02.5+08:00"),
        ("2025-01-13 14:00:02.123456+00:00", 1, "2025-01-13 14:00:03.123456+00:00"),
        ("2025-01-13T14:00Z", 30, "2025-01-13T14:00:30Z"),
        ("2025-01-13t14:00:02,5Z", -2, "2025-01-13t14:00:00,5Z"),
        ("2025-01-13T14:00:02+0530", 60, "2025-01-13T14:01:02+0530"),
        # Spellings the pattern does not follow come back in the plain extended form.
        ("20250113T140002Z", 30, "2025-01-13T14:00:32Z"),
        ("2025-01-13T14+01:00", 30, "2025-01-13T14:00:30+01:00"),
    ],
)
def test_shift_keeps_the_format_of_the_ts(ts: object, offset: int, shifted: object) -> None:
    moved = shift_ts(ts, offset)
    assert moved == shifted
    assert type(moved) is type(ts)
    before, after = parse_ts(ts, NOW), parse_ts(moved, NOW)
    assert before is not None and after is not None
    assert after - before == pytest.approx(offset, abs=1e-6)


@pytest.mark.parametrize("ts", [True, None, [1], {"a": 1}])
def test_shift_leaves_what_is_not_a_time_alone(ts: object) -> None:
    assert shift_ts(ts, 60) == ts


@given(
    seconds=st.floats(min_value=T0 - 10 * 365 * DAY, max_value=T0 + 365 * DAY),
    offset=st.integers(min_value=-5 * 365 * DAY, max_value=5 * 365 * DAY),
    form=st.sampled_from(["s-int", "s-float", "ms-int", "ms-float", "iso-z", "iso-offset"]),
)
def test_shift_moves_every_readable_ts_by_the_offset(
    seconds: float, offset: int, form: str
) -> None:
    ts: object
    if form == "s-int":
        ts = int(seconds)
    elif form == "s-float":
        ts = seconds
    elif form == "ms-int":
        ts = int(seconds * 1000)
    elif form == "ms-float":
        ts = seconds * 1000
    elif form == "iso-z":
        ts = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    else:
        ts = datetime.fromtimestamp(seconds, UTC).astimezone().isoformat()
    before = parse_ts(ts, NOW)
    moved = shift_ts(ts, offset)
    after = parse_ts(moved, NOW + 10 * 365 * DAY)
    assert before is not None and after is not None
    assert type(moved) is type(ts)
    assert math.isclose(after - before, offset, abs_tol=1e-3)


def test_range_is_half_open_and_a_missing_bound_does_not_limit() -> None:
    assert in_range(10.0, 10.0, 20.0)
    assert not in_range(20.0, 10.0, 20.0)
    assert not in_range(9.999, 10.0, 20.0)
    assert in_range(1e12, 10.0, None)
    assert in_range(-1.0, None, 20.0)
    assert in_range(5.0, None, None)


def test_rebased_rewrites_only_the_ts_of_an_object() -> None:
    record = EventRecord("posts", "u1", {"event_id": "e1", "ts": T0, "user_id": "u1"})
    moved = rebased(record, 100, has_ts=True)
    assert moved.value == {"event_id": "e1", "ts": T0 + 100, "user_id": "u1"}
    assert isinstance(moved.value, dict)
    assert list(moved.value) == ["event_id", "ts", "user_id"]
    assert record.value["ts"] == T0  # type: ignore[index]
    raw = EventRecord("posts", None, '{"ts": 1736776800, "event_id": "raw"}')
    assert rebased(raw, 100, has_ts=True) is raw
    bad = EventRecord("signups", None, {"event_id": "x", "ts": "yesterday"})
    assert rebased(bad, 100, has_ts=False) is bad


def _post(event_id: str, ts: object) -> EventRecord:
    return EventRecord("posts", None, {"event_id": event_id, "user_id": "u", "ts": ts})


def _lines(*items: EventRecord | EventFileError) -> list[tuple[int, EventRecord | EventFileError]]:
    return [(number, item) for number, item in enumerate(items, 1)]


def test_records_without_a_readable_ts_take_their_neighbours_time() -> None:
    bad: list[EventFileError] = []
    items = _lines(
        EventRecord("posts", None, "{not json"),
        _post("bad-ts", "yesterday"),
        _post("a", T0 + 5),
        EventFileError("f.jsonl", 4, "not valid JSON"),
        EventRecord("signups", "k", "[1, 2]"),
        _post("b", "2025-01-13T14:00:09Z"),
        EventRecord("posts", None, "{still not json"),
    )
    timed = list(timed_records(items, lambda: NOW, bad.append))
    assert [
        (r.value if isinstance(r.value, str) else r.value["event_id"], s, has)
        for r, s, has in timed
    ] == [
        ("{not json", T0 + 5, False),
        ("bad-ts", T0 + 5, False),
        ("a", T0 + 5, True),
        ("[1, 2]", T0 + 5, False),
        ("b", T0 + 9, True),
        ("{still not json", T0 + 9, False),
    ]
    assert [error.line_no for error in bad] == [4]


def test_a_file_without_any_readable_ts_is_stamped_with_the_wall_clock() -> None:
    items = _lines(EventRecord("posts", None, "x"), _post("future", NOW + 2 * DAY))
    timed = list(timed_records(items, lambda: NOW, lambda error: None))
    assert [(s, has) for _, s, has in timed] == [(NOW, False), (NOW, False)]
