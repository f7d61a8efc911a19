"""Synthetic event streams: deterministic scenarios (``rednote-2025``, ``baseline``) as event records."""

from surgewatch.simulate.scenarios import (
    DEFAULT_HOURS,
    DEFAULT_SCALE,
    DEFAULT_SCENARIO,
    DEFAULT_SEED,
    DEFAULT_START,
    SCENARIOS,
    expected_wave_signups,
    get_scenario,
    simulate,
    surge_hashtags,
    wave_onset,
    wave_window,
)

__all__ = [
    "DEFAULT_HOURS",
    "DEFAULT_SCALE",
    "DEFAULT_SCENARIO",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "SCENARIOS",
    "expected_wave_signups",
    "get_scenario",
    "simulate",
    "surge_hashtags",
    "wave_onset",
    "wave_window",
]
