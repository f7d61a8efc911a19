"""Command line: ``surgewatch <command>``; each command's ``--help`` explains it."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from surgewatch.config import Settings, SettingsError, load_settings
from surgewatch.simulate.scenarios import SCENARIOS


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone: add Z or an offset")
    return parsed.astimezone(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="surgewatch")
def main() -> None:
    """surgewatch: spot user-migration surges (signup spikes, surging hashtags) as they happen.

    Settings come from SURGEWATCH_* environment variables (see the README); flags override them.
    """


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def broker(port: int, host: str) -> None:
    """Run the embedded Kafka-compatible broker (tansu, memory storage) in the foreground."""
    from surgewatch.broker import BrokerError, run_foreground

    try:
        code = run_foreground(host, port)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@click.option("--web-port", type=click.IntRange(0, 65535), help="Port of /metrics (default 6066).")
@click.option(
    "--loglevel",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="info",
    show_default=True,
)
def worker(web_port: int | None, loglevel: str) -> None:
    """Run one worker. Several workers with the same SURGEWATCH_APP_ID share the partitions."""
    from surgewatch.worker.run import run_worker
    from surgewatch.worker.topics import BrokerUnreachable

    settings = _settings(web_port=web_port)
    try:
        run_worker(settings, loglevel=loglevel)
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--scenario",
    default="rednote-2025",
    show_default=True,
    type=click.Choice(sorted(SCENARIOS)),
    help="rednote-2025: the January 2025 migration; baseline: ordinary days; slow-ramp: a wave "
    "climbing over six hours; bot-spike: one account posting one tag thousands of times in a minute.",
)
@click.option("--seed", type=int, default=2025, show_default=True)
@click.option(
    "--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
@click.option("--start", "start", default=None, help="ISO time of the first event.")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--out", "out", required=True, help="Event file to write (.jsonl or .jsonl.gz).")
def simulate(
    scenario: str, seed: int, scale: float, start: str | None, hours: float | None, out: str
) -> None:
    """Write a deterministic synthetic event file: same arguments, same bytes."""
    from surgewatch.simulate.cli import run_simulate

    try:
        run_simulate(
            scenario=scenario,
            seed=seed,
            scale=scale,
            start=_iso(start) if start else None,
            hours=hours,
            out=out,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--max-speed", is_flag=True, help="Produce as fast as the broker takes it.")
def replay(files: tuple[str, ...], speed: float | None, max_speed: bool) -> None:
    """Produce recorded event files into the input topics, keeping each event's own time.

    --speed 60 plays one hour of event time in one minute; the default is --max-speed.
    """
    from surgewatch.eventfile import EventFileError
    from surgewatch.replay import ReplayError
    from surgewatch.replay import replay as run_replay

    if speed is not None and max_speed:
        raise click.UsageError("give either --speed or --max-speed, not both")
    settings = _settings()
    try:
        stats = asyncio.run(run_replay(list(files), settings, speed=speed, progress=True))
    except (ReplayError, EventFileError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot read {exc.filename or 'input'}: {exc.strerror}"
        ) from None
    click.echo(
        f"replayed {stats.events} events in {stats.seconds:.1f} s "
        f"({stats.events_per_s:,.0f}/s), {stats.rejected_lines} unreadable lines skipped"
    )


@main.command()
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="A worker's /metrics URL; repeat for each worker of the app "
    "(default: the local worker, from SURGEWATCH_WEB_HOST and the web port).",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    help="Port of the local worker's /metrics, when no --url is given (default 6066).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
def top(urls: tuple[str, ...], web_port: int | None, interval: float, once: bool) -> None:
    """Live view of the top and surging hashtags, signups by country and pipeline health.

    Reads the workers' /metrics pages: counters are summed over workers, the trend series come
    from the worker that owns them. Ctrl-C stops it.
    """
    from surgewatch.top import TopError, default_metrics_url, run_top

    if urls and web_port is not None:
        raise click.UsageError("give either --url or --web-port, not both")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(
                f"{url!r} is not an http:// URL (e.g. http://127.0.0.1:6066/metrics)",
                param_hint="--url",
            )
    targets = list(urls) or [default_metrics_url(_settings(web_port=web_port))]
    try:
        run_top(targets, interval_seconds=interval, once=once)
    except TopError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--scale", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True
)
@click.option(
    "--speed", type=click.FloatRange(min=0, min_open=True), default=240.0, show_default=True
)
@click.option(
    "--hours", type=click.FloatRange(min=0, min_open=True), default=14.0, show_default=True
)
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".surgewatch/demo"))
def demo(scale: float, speed: float, hours: float, port: int, workdir: Path) -> None:
    """The main job on embedded defaults: broker, worker and a replayed rednote-2025 surge."""
    from surgewatch.demo import run_demo

    sys.exit(run_demo(scale=scale, speed=speed, hours=hours, port=port, workdir=workdir))


if __name__ == "__main__":  # pragma: no cover
    main()
