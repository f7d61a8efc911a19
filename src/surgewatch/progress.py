"""Progress display for long work (simulate, replay, archive, backfill): a bar with rate and ETA.

Drawn on stderr, and only when stderr is a terminal and ``CI`` is not set, so stdout stays clean for
data (``--out -``) and logs stay readable. Callers update it per chunk of work, not per event::

    with track(total=size_bytes, description="replay", unit="bytes") as tracker:
        ...
        tracker.update(bytes_read, note=f"{events:,} events")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

BYTES: Final = "bytes"


def progress_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a progress bar should be drawn: stderr is a terminal and ``CI`` is unset."""
    env = os.environ if environ is None else environ
    if env.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if env.get("TERM") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _compact(amount: float) -> str:
    """``950``, ``12.5k``, ``3.1M``: short enough for an 80-column terminal."""
    size = abs(amount)
    if size >= 1e6:
        return f"{amount / 1e6:.1f}M"
    if size >= 1e4:
        return f"{amount / 1e3:.0f}k"
    if size >= 1e3:
        return f"{amount / 1e3:.1f}k"
    return f"{amount:.0f}" if size >= 10 or amount == int(amount) else f"{amount:.1f}"


class _AmountColumn(ProgressColumn):
    """``253k/259k event-s`` style amount for units other than bytes."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else _compact(task.total)
        return Text(f"{_compact(task.completed)}/{total} {self._unit}", style="progress.download")


class _RateColumn(ProgressColumn):
    """``83k/s`` style rate for units other than bytes."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = "?" if speed is None else _compact(speed)
        return Text(f"{shown}/s", style="progress.data.speed")


class Tracker:
    """Handle on one progress bar; a disabled tracker accepts every call and draws nothing."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._progress = progress
        self._task_id = task_id
        self.completed = 0.0

    @property
    def enabled(self) -> bool:
        """Whether anything is drawn."""
        return self._progress is not None

    def advance(self, amount: float, *, note: str | None = None) -> None:
        """Add ``amount`` to the work done."""
        self.update(self.completed + amount, note=note)

    def update(self, completed: float, *, note: str | None = None) -> None:
        """Set the work done to ``completed``, optionally with a short note shown after the bar."""
        self.completed = completed
        if self._progress is None or self._task_id is None:
            return
        if note is None:
            self._progress.update(self._task_id, completed=completed)
        else:
            self._progress.update(self._task_id, completed=completed, note=note)


@contextmanager
def track(
    total: float | None,
    description: str,
    unit: str,
    *,
    enabled: bool | None = None,
    console: Console | None = None,
) -> Iterator[Tracker]:
    """Show a progress bar for ``total`` units of work (``unit="bytes"`` shows sizes) while in the block.

    ``enabled=None`` decides with :func:`progress_enabled`; ``total=None`` means unknown (no ETA).
    """
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        yield Tracker(None, None)
        return
    amount: list[ProgressColumn]
    if unit == BYTES:
        amount = [DownloadColumn(), TransferSpeedColumn()]
    else:
        amount = [_AmountColumn(unit), _RateColumn()]
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        *amount,
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console or Console(stderr=True),
        transient=False,
        refresh_per_second=5,
    )
    with progress:
        task_id = progress.add_task(description, total=total, note="")
        tracker = Tracker(progress, task_id)
        yield tracker
        if total is not None:
            progress.update(task_id, completed=total)
