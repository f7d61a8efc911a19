"""Every panel's PromQL, runnable outside Grafana, and a check that each returns data.

``panel_queries`` replaces ``$__rate_interval`` with a fixed interval and every dashboard
variable used in a label matcher (``country=~"$country"``) with ``.*``, so the expressions run
as they are against Prometheus's ``/api/v1/query``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgewatch.dashboards.build import iter_panels

#: Grafana's ``$var``, ``${var}`` and ``${var:format}``.
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
#: What a multi-value variable stands for when every value is selected.
ALL_VALUES = ".*"


class PrometheusError(Exception):
    """Prometheus cannot be reached or answered with an error; the message is one line."""


def _load(dashboard: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(dashboard, Mapping):
        return dashboard
    loaded: dict[str, Any] = json.loads(Path(dashboard).read_text(encoding="utf-8"))
    return loaded


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every Grafana variable replaced; an unknown one is a ``ValueError``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def panel_queries(
    dashboard: Mapping[str, Any] | str | Path, rate_interval: str = "1m"
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, variables substituted.

    ``dashboard`` is the parsed JSON or the path of a file. ``$__rate_interval`` becomes
    ``rate_interval``; the dashboard's query variables (``$country``, ``$job``) become ``.*``.
    """
    model = _load(dashboard)
    values = {"__rate_interval": rate_interval}
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") in ("query", "custom"):
            values[variable["name"]] = ALL_VALUES
    queries = []
    for panel in iter_panels(model):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr and not target.get("hide"):
                queries.append((str(panel.get("title", "")), substitute(expr, values)))
    return queries


@dataclass(frozen=True)
class QueryOutcome:
    """What Prometheus returned for one panel query: ``series`` samples, or an ``error``."""

    title: str
    expr: str
    series: int
    error: str | None = None

    @property
    def has_data(self) -> bool:
        """True when the query returned at least one sample."""
        return self.error is None and self.series > 0


def instant_query(prometheus_url: str, expr: str, timeout_seconds: float = 10.0) -> int:
    """Number of series (or 1 for a scalar) ``expr`` returns now; raises ``PrometheusError``."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise PrometheusError(f"Prometheus answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"cannot reach Prometheus at {prometheus_url}: {reason}") from None
    except ValueError:
        raise PrometheusError(f"{prometheus_url} did not answer with Prometheus JSON") from None
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus answered {body.get('error', body)}")
    data = body.get("data", {})
    if data.get("resultType") in ("scalar", "string"):
        return 1
    return len(data.get("result", []))


def run_queries(
    prometheus_url: str, queries: Iterable[tuple[str, str]], timeout_seconds: float = 10.0
) -> list[QueryOutcome]:
    """Run each (title, expr) as an instant query now.

    A query Prometheus rejects is an outcome with an ``error``; an unreachable Prometheus raises
    ``PrometheusError``.
    """
    outcomes = []
    for title, expr in queries:
        try:
            series = instant_query(prometheus_url, expr, timeout_seconds)
        except PrometheusError as exc:
            if str(exc).startswith("cannot reach"):
                raise
            outcomes.append(QueryOutcome(title, expr, 0, str(exc)))
        else:
            outcomes.append(QueryOutcome(title, expr, series))
    return outcomes
