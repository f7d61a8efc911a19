"""``surgewatch simulate``: writes a scenario's events to an event file with a progress bar."""

from __future__ import annotations

from datetime import datetime

import click

from surgewatch.eventfile import write_events
from surgewatch.progress import track
from surgewatch.simulate.scenarios import DEFAULT_HOURS, DEFAULT_START, SCENARIOS, simulate


def run_simulate(
    *,
    scenario: str,
    seed: int,
    scale: float,
    start: datetime | None,
    hours: float | None,
    out: str,
    quiet: bool = False,
) -> int:
    """Write the events; returns how many. Same arguments, same bytes."""
    if scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        raise click.BadParameter(f"unknown scenario {scenario!r}; choose one of: {known}")
    span_hours = hours if hours is not None else DEFAULT_HOURS
    with track(span_hours * 3600, f"simulating {scenario}", "event-s", enabled=None) as tracker:
        records = simulate(
            scenario,
            seed=seed,
            scale=scale,
            start=start or DEFAULT_START,
            hours=span_hours,
            on_progress=tracker.update,
        )
        count = write_events(out, records)
    if not quiet:
        click.echo(f"wrote {count} events to {out}", err=True)
    return count
