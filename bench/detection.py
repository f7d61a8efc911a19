"""Detection benchmark: how soon each simulated migration is flagged, what else is, and how fast.

Simulates each scenario from the default start with the default seed at ``--scale``, runs the events
through :mod:`surgewatch.offline` (the worker's pure pipeline, in memory, default settings) and
prints one row per key the scenario is about: its onset, the window that flagged it, the delay in
windows, how often it started and when its first surge ended. ``bot-spike`` runs twice on the same
events, with the per-account trend cap and without it (the control: the spike must be flagged then).

Wave keys are the US and all-signups (``*``) counts and the scenario's surge hashtags; for
``bot-spike``, the bot's tag. A false alarm is any surge start before the onset, and after it a start
of a key that is not a wave key; every run without a wave (``baseline``) counts all starts as false
alarms before the onset. Each false alarm is listed below the table with its count and baseline. The
compute rate is events over the seconds spent in the pipeline (simulation excluded). Prints a JSON
line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from surgewatch.config import load_settings
from surgewatch.eventfile import EventRecord
from surgewatch.offline import OfflinePipeline
from surgewatch.progress import track
from surgewatch.simulate import (
    BOT_SPIKE_SCENARIO,
    DEFAULT_SEED,
    DEFAULT_START,
    SCENARIOS,
    bot_spike,
    get_scenario,
    simulate,
    surge_hashtags,
    wave_onset,
)
from surgewatch.trends.partition import Surge
from surgewatch.trends.surge import SurgeEvent

HASHTAGS = "hashtag_posts"
SIGNUPS = "signups"
#: Hours simulated per scenario: past the end of rednote-2025's plateau and decay (39 h + 30 h),
#: two days of baseline, slow-ramp's ramp, plateau and decay, an hour past the bot spike.
DEFAULT_HOURS = {
    "rednote-2025": 72.0,
    "baseline": 48.0,
    "slow-ramp": 48.0,
    BOT_SPIKE_SCENARIO: 31.0,
}
#: Far above any account's posts in a window: the per-account cap never applies.
NO_USER_CAP = 10**9
#: Fixed, and far enough ahead of 2025 that no simulated ts is "in the future".
NOW_SECONDS = 2_000_000_000.0
#: Records handed to the pipeline between progress updates.
CHUNK_EVENTS = 50_000


@dataclass(frozen=True)
class Case:
    """One pipeline run: a scenario's events with settings overrides, and what it should show."""

    label: str
    scenario: str
    expect: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class KeyRow:
    """How one wave key fared."""

    metric: str
    key: str
    detected: SurgeEvent | None
    delay_windows: int | None
    starts: int
    ended: SurgeEvent | None


@dataclass
class Outcome:
    """One run's rows, false alarms and compute time."""

    case: Case
    hours: float
    events: int
    compute_seconds: float
    onset: datetime | None
    rows: list[KeyRow]
    before: list[Surge]
    after: list[Surge]
    surges: list[Surge]


def cases(scenario: str) -> list[Case]:
    """The runs of one scenario."""
    if scenario == BOT_SPIKE_SCENARIO:
        return [
            Case(scenario, scenario, "quiet"),
            Case(f"{scenario} no cap", scenario, "surge", {"trend_user_cap": NO_USER_CAP}),
        ]
    return [Case(scenario, scenario, "surge" if get_scenario(scenario).wave else "quiet")]


def wave_keys(scenario: str, scale: float) -> tuple[datetime | None, list[tuple[str, str]]]:
    """The scenario's onset and the (metric, key) pairs it is about."""
    if scenario == BOT_SPIKE_SCENARIO:
        spike = bot_spike(scale=scale)
        return spike.start, [(HASHTAGS, spike.tag)]
    if get_scenario(scenario).wave is None:
        return None, []
    keys = [(SIGNUPS, "US"), (SIGNUPS, "*")]
    keys += [(HASHTAGS, tag) for tag in surge_hashtags(scenario)]
    return wave_onset(scenario=scenario), keys


def generate(scenario: str, scale: float, seed: int, hours: float) -> list[EventRecord]:
    """The scenario's events, with a progress bar on a terminal."""
    with track(hours * 3600, f"simulating {scenario}", "event-s") as tracker:
        return list(
            simulate(scenario, seed=seed, scale=scale, hours=hours, on_progress=tracker.update)
        )


def run(case: Case, records: list[EventRecord], scale: float, hours: float) -> Outcome:
    """Run the pipeline on ``records`` and score its surges against the scenario's wave."""
    settings = load_settings(**case.overrides)
    pipeline = OfflinePipeline(settings, now=lambda: NOW_SECONDS)
    started = time.perf_counter()
    with track(len(records), f"computing {case.label}", "events") as tracker:
        for first in range(0, len(records), CHUNK_EVENTS):
            pipeline.extend(records[first : first + CHUNK_EVENTS])
            tracker.update(min(first + CHUNK_EVENTS, len(records)))
        result = pipeline.finish()
    seconds = time.perf_counter() - started

    window = settings.window_seconds
    onset, keys = wave_keys(case.scenario, scale)
    onset_window = None if onset is None else int(onset.timestamp()) // window * window
    surges = sorted(result.surges, key=lambda surge: surge.event.window_start)
    starts = [surge for surge in surges if surge.event.state == "start"]
    wave = set(keys)

    def early(window_start: int) -> bool:
        return onset_window is None or window_start < onset_window

    rows = []
    for metric, key in keys:
        flagged = [
            s.event
            for s in starts
            if (s.metric, s.event.key) == (metric, key) and not early(s.event.window_start)
        ]
        detected = flagged[0] if flagged else None
        end = None if detected is None else first_end(surges, metric, detected)
        delay = None
        if detected is not None and onset_window is not None:
            delay = (detected.window_start - onset_window) // window
        rows.append(KeyRow(metric, key, detected, delay, len(flagged), end))
    before = [surge for surge in starts if early(surge.event.window_start)]
    after = [
        s for s in starts if not early(s.event.window_start) and (s.metric, s.event.key) not in wave
    ]
    return Outcome(case, hours, len(records), seconds, onset, rows, before, after, surges)


def utc(moment: datetime | int | None) -> str:
    """``2025-01-13 15:02`` (UTC), or ``-``."""
    if moment is None:
        return "-"
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def width(text: str) -> int:
    """Terminal columns of ``text``: CJK characters such as #小红书's take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def pad(text: str, columns: int) -> str:
    """``text`` left-aligned in ``columns`` terminal columns."""
    return text + " " * (columns - width(text))


def ended(event: SurgeEvent | None) -> str:
    """When a surge ended, or ``open`` if it had not by the end of the run."""
    return "open" if event is None else utc(event.window_start)


def first_end(surges: Sequence[Surge], metric: str, start: SurgeEvent) -> SurgeEvent | None:
    """The end of the surge ``start`` began (``surges`` in event-time order)."""
    for surge in surges:
        event = surge.event
        if (
            surge.metric == metric
            and event.key == start.key
            and event.state == "end"
            and event.window_start > start.window_start
        ):
            return event
    return None


def table(outcomes: Sequence[Outcome], scale: float) -> list[str]:
    """The readable report: one row per wave key, then the false alarms one by one."""
    head = (
        "scenario",
        "expect",
        "scale",
        "hours",
        "events",
        "events/s",
        "key",
        "onset (UTC)",
        "detected (UTC)",
        "delay",
        "starts",
        "surge end (UTC)",
        "false alarms before/after",
    )
    rows: list[tuple[str, ...]] = []
    for out in outcomes:
        run_cells = (
            out.case.label,
            out.case.expect,
            f"{scale:g}",
            f"{out.hours:g}",
            f"{out.events:,}",
            f"{out.events / out.compute_seconds:,.0f}",
        )
        after = "-" if out.onset is None else str(len(out.after))
        alarms = f"{len(out.before)} / {after}"
        for index, row in enumerate(out.rows or [None]):
            cells = run_cells if index == 0 else ("",) * len(run_cells)
            if row is None:
                rows.append((*cells, "-", "-", "-", "-", "-", "-", alarms))
                continue
            detected = row.detected
            rows.append(
                (
                    *cells,
                    f"{row.metric}|{row.key}",
                    utc(out.onset),
                    utc(detected.window_start) if detected else "never",
                    "-" if row.delay_windows is None else str(row.delay_windows),
                    str(row.starts),
                    "-" if detected is None else ended(row.ended),
                    alarms if index == 0 else "",
                )
            )
    widths = [max(map(width, column)) for column in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(pad(cell, columns) for cell, columns in zip(line, widths, strict=True)).rstrip()
        for line in (head, *rows)
    ]
    lines.insert(1, "-" * len(lines[0]))

    false_alarms = [
        (out, surge, out.onset is not None and surge in out.after)
        for out in outcomes
        for surge in (*out.before, *out.after)
    ]
    if false_alarms:
        lines += ["", "false alarms (surge starts):"]
        for out, surge, is_after in false_alarms:
            event = surge.event
            lines.append(
                f"  {out.case.label:<18} {'after ' if is_after else 'before'} onset  "
                f"{pad(f'{surge.metric}|{event.key}', 30)} {utc(event.window_start)}"
                f"  count {event.count:>5}"
                f"  baseline {event.baseline:8.2f}  score {event.score:6.2f}"
                f"  ended {ended(first_end(out.surges, surge.metric, event))}"
            )
    total_events = sum(out.events for out in outcomes)
    total_seconds = sum(out.compute_seconds for out in outcomes)
    lines += [
        "",
        f"offline compute: {total_events:,} events in {total_seconds:.1f} s = "
        f"{total_events / total_seconds:,.0f} events/s",
    ]
    return lines


def as_json(outcomes: Sequence[Outcome], scale: float, seed: int) -> dict[str, Any]:
    total_events = sum(out.events for out in outcomes)
    total_seconds = sum(out.compute_seconds for out in outcomes)
    return {
        "scale": scale,
        "seed": seed,
        "start": DEFAULT_START.isoformat(),
        "runs": [
            {
                "run": out.case.label,
                "hours": out.hours,
                "events": out.events,
                "events_per_s": round(out.events / out.compute_seconds),
                "delay_windows": {f"{row.metric}|{row.key}": row.delay_windows for row in out.rows},
                "false_alarms_before_onset": len(out.before),
                "false_alarms_after_onset": None if out.onset is None else len(out.after),
            }
            for out in outcomes
        ],
        "events": total_events,
        "compute_s": round(total_seconds, 1),
        "events_per_s": round(total_events / total_seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument(
        "--hours",
        type=float,
        help="hours to simulate for every scenario run (default: per scenario, "
        + ", ".join(f"{n} {h:g}" for n, h in DEFAULT_HOURS.items())
        + ")",
    )
    args = parser.parse_args()
    if args.scale <= 0 or (args.hours is not None and args.hours <= 0):
        parser.error("--scale and --hours must be positive")

    outcomes: list[Outcome] = []
    for scenario in args.scenario or list(DEFAULT_HOURS):
        hours = args.hours or DEFAULT_HOURS[scenario]
        started = time.perf_counter()
        records = generate(scenario, args.scale, args.seed, hours)
        print(
            f"{scenario}: {len(records):,} events simulated in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        for case in cases(scenario):
            outcome = run(case, records, args.scale, hours)
            print(f"{case.label}: computed in {outcome.compute_seconds:.1f} s", file=sys.stderr)
            outcomes.append(outcome)
        del records
    print("\n".join(table(outcomes, args.scale)))
    print(json.dumps(as_json(outcomes, args.scale, args.seed), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
