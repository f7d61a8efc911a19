"""Progress bars: drawn on a terminal only, quiet in CI and in pipes, and cheap to call when off."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from surgewatch.progress import BYTES, progress_enabled, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ci_turns_progress_off_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_enabled({}) is True
    assert progress_enabled({"CI": "true"}) is False
    assert progress_enabled({"CI": "1"}) is False
    assert progress_enabled({"CI": "false"}) is True


def test_a_pipe_gets_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_enabled({}) is False


def test_a_disabled_tracker_accepts_everything_and_draws_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with track(100, "work", "items", enabled=False) as tracker:
        tracker.advance(10)
        tracker.update(50, note="half")
    assert not tracker.enabled
    assert tracker.completed == 50
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(("unit", "shown"), [(BYTES, "kB"), ("event-s", "/4.1k event-s")])
def test_an_enabled_tracker_draws_a_bar_with_the_unit(unit: str, shown: str) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with track(4096, "replay", unit, enabled=True, console=console) as tracker:
        tracker.update(2048, note="12 events")
    text = out.getvalue()
    assert "replay" in text
    assert shown in text
    assert "12 events" in text
