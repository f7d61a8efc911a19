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
    """The main job on embedded defaults: broker, worker, Prometheus and Alertmanager (when
    installed) and a replayed rednote-2025 surge, with a live view; Ctrl-C stops it all."""
    from surgewatch.demo import run_demo

    sys.exit(run_demo(scale=scale, speed=speed, hours=hours, port=port, workdir=workdir))


@main.group()
def dashboards() -> None:
    """Grafana dashboards as code: build, check and push dashboards/*.json."""


_DASHBOARDS_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the dashboard files (default: the project's dashboards/).",
)


@dashboards.command("build")
@_DASHBOARDS_DIR
def dashboards_build(directory: Path | None) -> None:
    """Write dashboards/*.json from code (deterministic: same code, same bytes)."""
    from surgewatch.dashboards.build import default_dashboards_dir, write_all

    try:
        written = write_all(directory or default_dashboards_dir())
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None
    for path in written:
        click.echo(f"wrote {path}")


@dashboards.command("check")
@_DASHBOARDS_DIR
@click.option(
    "--schema",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON schema of a dashboard (default: tools/grafana-schema/dashboard.schema.json).",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    default=None,
    help="Also run every panel query against this Prometheus and report those without data.",
)
@click.option(
    "--rate-interval",
    default="1m",
    show_default=True,
    help="What $__rate_interval stands for in the --prometheus queries.",
)
def dashboards_check(
    directory: Path | None, schema: Path | None, prometheus_url: str | None, rate_interval: str
) -> None:
    """Check dashboards/*.json: valid against the Grafana dashboard schema, equal to a fresh build,
    and (with --prometheus) every panel query returns data.
    """
    from surgewatch.dashboards.build import (
        DASHBOARDS,
        DashboardCheckError,
        check_files,
        default_dashboards_dir,
        default_schema_path,
    )
    from surgewatch.dashboards.queries import PrometheusError, panel_queries, run_queries

    if prometheus_url is not None and not prometheus_url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{prometheus_url!r} is not an http:// URL (e.g. http://127.0.0.1:9090)",
            param_hint="--prometheus",
        )
    folder = directory or default_dashboards_dir()
    try:
        problems = check_files(folder, schema or default_schema_path())
    except DashboardCheckError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        extra = len(problems) - 1
        more = f" (+{extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        raise click.ClickException(problems[0] + more)
    click.echo(f"dashboards in {folder} are valid and up to date")
    if prometheus_url is None:
        return
    queries = [
        (f"{Path(name).stem} / {title}", expr)
        for name in DASHBOARDS
        for title, expr in panel_queries(folder / name, rate_interval=rate_interval)
    ]
    try:
        outcomes = run_queries(prometheus_url, queries)
    except PrometheusError as exc:
        raise click.ClickException(str(exc)) from None
    empty = [outcome for outcome in outcomes if not outcome.has_data]
    for outcome in empty:
        why = outcome.error or "no data"
        click.echo(f"{why}: {outcome.title}: {outcome.expr}", err=True)
    if empty:
        raise click.ClickException(
            f"{len(empty)} of {len(outcomes)} panel queries returned no data from {prometheus_url}"
        )
    click.echo(f"all {len(outcomes)} panel queries returned data from {prometheus_url}")


@dashboards.command("push")
@_DASHBOARDS_DIR
@click.option(
    "--url",
    envvar="GRAFANA_URL",
    metavar="URL",
    default=None,
    help="Grafana to push to, e.g. http://localhost:3000 (default: $GRAFANA_URL).",
)
def dashboards_push(directory: Path | None, url: str | None) -> None:
    """Upload dashboards/*.json to Grafana (folder "surgewatch", overwriting).

    The API token comes from $GRAFANA_TOKEN only (a service account token with the Editor role);
    it is never printed.
    """
    import json
    import os

    from surgewatch.dashboards.build import DASHBOARDS, default_dashboards_dir
    from surgewatch.dashboards.push import PushError, push_dashboards

    if not url:
        raise click.UsageError("set GRAFANA_URL (or --url), e.g. http://localhost:3000")
    token = os.environ.get("GRAFANA_TOKEN", "")
    if not token:
        raise click.UsageError("set GRAFANA_TOKEN to a Grafana service account token")
    folder = directory or default_dashboards_dir()
    models = []
    for name in DASHBOARDS:
        path = folder / name
        try:
            models.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise click.ClickException(
                f"{path} is missing: run `surgewatch dashboards build`"
            ) from None
        except ValueError as exc:
            raise click.ClickException(f"{path} is not JSON: {exc}") from None
    try:
        pushed = push_dashboards(url, token, models)
    except PushError as exc:
        raise click.ClickException(str(exc)) from None
    for item in pushed:
        version = f" (version {item.version})" if item.version is not None else ""
        click.echo(f"pushed {item.uid} to folder surgewatch: {item.url}{version}")


if __name__ == "__main__":  # pragma: no cover
    main()
