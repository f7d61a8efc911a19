"""Synthetic event streams: deterministic scenarios (``rednote-2025``, ``baseline``, ``slow-ramp``,
``bot-spike``) as event records."""

from surgewatch.simulate.model import BotSpikeMinute
from surgewatch.simulate.scenarios import (
    BOT_SPIKE_SCENARIO,
    DEFAULT_HOURS,
    DEFAULT_SCALE,
    DEFAULT_SCENARIO,
    DEFAULT_SEED,
    DEFAULT_START,
    SCENARIOS,
    bot_spike,
    expected_wave_signups,
    get_scenario,
    simulate,
    surge_hashtags,
    wave_onset,
    wave_window,
)

__all__ = [
    "BOT_SPIKE_SCENARIO",
    "DEFAULT_HOURS",
    "DEFAULT_SCALE",
    "DEFAULT_SCENARIO",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "SCENARIOS",
    "BotSpikeMinute",
    "bot_spike",
    "expected_wave_signups",
    "get_scenario",
    "simulate",
    "surge_hashtags",
    "wave_onset",
    "wave_window",
]
