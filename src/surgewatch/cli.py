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


_WORKER_EPILOG = """\
Running N workers: start `surgewatch worker` N times with the same SURGEWATCH_APP_ID, broker and
topic settings, each with its own --web-port. They form one consumer group and split the
partitions; when one stops, the others take over its partitions.

Partitions bound the parallelism. The input topics and the internal {app_id}-window-partials topic
have SURGEWATCH_PARTITIONS partitions (4 by default), and a partition is read by one worker at a
time, so workers beyond that number get none and sit idle. The {app_id}-trend-summaries topic has
1 partition: one worker merges the app-wide trend view (top hashtags, surge scores) and serves it on
its /metrics; `surgewatch top --url URL --url URL ...` reads every worker's. A topic keeps the
partition count it was created with: set SURGEWATCH_PARTITIONS before the first worker or replay
creates the topics.
"""


@main.command(epilog=_WORKER_EPILOG)
@click.option("--web-port", type=click.IntRange(0, 65535), help="Port of /metrics (default 6066).")
@click.option(
    "--loglevel",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="info",
    show_default=True,
)
def worker(web_port: int | None, loglevel: str) -> None:
    """Run one worker. Several workers with the same SURGEWATCH_APP_ID share the partitions.

    It waits up to SURGEWATCH_BROKER_WAIT_SECONDS (60) for a broker that is not up yet. It stops
    with exit code 1 and one line saying why when its broker has not answered for that long, or
    has lost its data (a restarted embedded broker keeps no topics, records or offsets).
    /metrics binds to SURGEWATCH_WEB_HOST (127.0.0.1).
    """
    from surgewatch.worker.run import run_worker
    from surgewatch.worker.topics import BrokerUnreachable

    settings = _settings(web_port=web_port)
    try:
        run_worker(settings, loglevel=loglevel)
    except (BrokerUnreachable, SettingsError) as exc:
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


def _iso_flag(value: str, flag: str) -> datetime:
    """``_iso`` for a flag, failing in one line (no usage text) that names the flag."""
    try:
        return _iso(value)
    except click.BadParameter as exc:
        raise click.ClickException(f"{flag}: {exc.message}") from None


def _count_by_stream(by_stream: dict[str, int]) -> str:
    return ", ".join(f"{stream} {count:,}" for stream, count in by_stream.items())


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Pace on event time: 60 plays an hour in a minute.",
)
@click.option("--max-speed", is_flag=True, help="Produce as fast as the broker takes it.")
@click.option(
    "--from",
    "since",
    metavar="ISO",
    default=None,
    help="Only events at or after this time (their own ts, before any rebase), "
    "e.g. 2025-01-13T15:00Z.",
)
@click.option("--until", metavar="ISO", default=None, help="Only events before this time.")
@click.option(
    "--rebase-to-now",
    is_flag=True,
    help="Shift every event time by one offset so the first event plays as now "
    "(for demos and alert tests); each ts keeps its format.",
)
def replay(
    files: tuple[str, ...],
    speed: float | None,
    max_speed: bool,
    since: str | None,
    until: str | None,
    rebase_to_now: bool,
) -> None:
    """Produce recorded event files (- for stdin) into the input topics, keeping each event's time.

    --speed 60 plays one hour of event time in one minute; the default is --max-speed. Bad lines
    are named with their file and line number, counted and skipped.
    """
    from surgewatch.eventfile import EventFileError
    from surgewatch.replay import ReplayError
    from surgewatch.replay import replay as run_replay

    if speed is not None and max_speed:
        raise click.UsageError("give either --speed or --max-speed, not both")
    since_time = None if since is None else _iso_flag(since, "--from")
    until_time = None if until is None else _iso_flag(until, "--until")
    if since_time is not None and until_time is not None and since_time >= until_time:
        raise click.ClickException(f"--from {since} must be before --until {until}")
    settings = _settings()
    try:
        stats = asyncio.run(
            run_replay(
                list(files),
                settings,
                speed=speed,
                progress=True,
                since=since_time,
                until=until_time,
                rebase_to_now=rebase_to_now,
            )
        )
    except (ReplayError, EventFileError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot read {exc.filename or 'input'}: {exc.strerror}"
        ) from None
    extras = []
    if since_time is not None or until_time is not None:
        extras.append(f"{stats.outside_range:,} outside --from/--until")
    if rebase_to_now:
        extras.append(f"event times shifted by {stats.rebase_seconds:+,} s")
    click.echo(
        f"replayed {stats.events:,} events ({_count_by_stream(stats.by_stream)}) in "
        f"{stats.seconds:.1f} s ({stats.events_per_s:,.0f}/s); "
        + "; ".join([f"{stats.rejected_lines:,} unreadable lines skipped", *extras])
    )


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--tsdb",
    "tsdb",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the TSDB blocks (a Prometheus data directory, or a folder to copy from).",
)
@click.option(
    "--keep-openmetrics",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also keep the OpenMetrics text the blocks were made from.",
)
def backfill(files: tuple[str, ...], tsdb: Path, keep_openmetrics: Path | None) -> None:
    """Compute the window metrics of event files offline and write Prometheus TSDB blocks.

    Every series a worker serves is stamped with the event time at which it would have served it,
    so Prometheus and the dashboards show the history at its true time. Needs promtool.
    """
    from surgewatch.backfill import BackfillError
    from surgewatch.backfill import backfill as run_backfill

    settings = _settings()
    try:
        stats, blocks = run_backfill(list(files), settings, tsdb, keep_openmetrics=keep_openmetrics)
    except BackfillError as exc:
        raise click.ClickException(str(exc)) from None
    span = ""
    if stats.first_seconds is not None and stats.last_seconds is not None:
        first = datetime.fromtimestamp(stats.first_seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")
        last = datetime.fromtimestamp(stats.last_seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")
        span = f" from {first} to {last}"
    click.echo(
        f"backfilled {stats.events:,} events ({stats.bad_lines:,} unreadable lines skipped) in "
        f"{stats.seconds:.1f} s ({stats.events_per_s:,.0f}/s): {stats.windows:,} windows, "
        f"{stats.samples:,} samples{span}, {len(blocks)} blocks in {tsdb}"
    )


@main.command()
@click.option(
    "--since", required=True, metavar="ISO", help="First event time, e.g. 2025-01-13T15:00Z."
)
@click.option("--until", required=True, metavar="ISO", help="End of the range (excluded).")
@click.option(
    "--out",
    "out",
    metavar="FILE",
    required=True,
    help="Event file to write (.jsonl, .jsonl.gz, or - for stdout).",
)
def archive(since: str, until: str, out: str) -> None:
    """Write the input topics' events with an event time in [--since, --until) to an event file.

    Reads without a consumer group (the workers' offsets are untouched), seeking by timestamp where
    the broker supports it; the file replays with `surgewatch replay`.
    """
    from surgewatch.archive import ArchiveError
    from surgewatch.archive import archive as run_archive

    since_time = _iso_flag(since, "--since")
    until_time = _iso_flag(until, "--until")
    if since_time >= until_time:
        raise click.ClickException(f"--since {since} must be before --until {until}")
    settings = _settings()
    try:
        stats = asyncio.run(run_archive(settings, since_time, until_time, out, progress=True))
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"archived {stats.events:,} events ({_count_by_stream(stats.by_stream)}; "
        f"{stats.raw_values:,} raw) to {'stdout' if out == '-' else out} in {stats.seconds:.1f} s "
        f"({stats.events_per_s:,.0f}/s); read {stats.records_read:,} records",
        err=out == "-",
    )


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--out", "out", required=True, help="HTML file to write (- for stdout), e.g. report.html."
)
@click.option(
    "--from",
    "since",
    metavar="ISO",
    default=None,
    help="Show the windows from this time on (default: from the first).",
)
@click.option(
    "--until", metavar="ISO", default=None, help="Show the windows before this time (default: all)."
)
def report(files: tuple[str, ...], out: str, since: str | None, until: str | None) -> None:
    """Write one self-contained HTML page of the windows and surges of event files (- for stdin).

    Computed offline with the worker's code (the counts and surges a replay gives): signups per
    window by country and the top hashtags over time as SVG charts with the surges marked, and a
    table of surges (start, peak, end). No script, no external asset: open it in a browser, mail
    it, attach it to a ticket. --from/--until choose the windows shown; surges are scored with the
    whole input as history.
    """
    from surgewatch.report import ReportError, write_report

    since_time = None if since is None else _iso_flag(since, "--from")
    until_time = None if until is None else _iso_flag(until, "--until")
    if since_time is not None and until_time is not None and since_time >= until_time:
        raise click.ClickException(f"--from {since} must be before --until {until}")
    settings = _settings()
    try:
        stats = write_report(
            list(files),
            out,
            settings,
            since_seconds=None if since_time is None else since_time.timestamp(),
            until_seconds=None if until_time is None else until_time.timestamp(),
            progress=True,
        )
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    skipped = (
        f", {stats.unreadable_lines:,} unreadable lines skipped" if stats.unreadable_lines else ""
    )
    click.echo(
        f"report of {stats.events:,} events: {stats.windows:,} windows, {stats.surges:,} surges, "
        f"wrote {'stdout' if out == '-' else out} ({stats.size_bytes / 1024:,.0f} KiB) "
        f"in {stats.seconds:.1f} s{skipped}",
        err=out == "-",
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
