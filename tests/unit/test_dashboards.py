"""Dashboards as code: committed files equal a fresh build, pass the Grafana schema, and every
panel query is plain PromQL over series the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from surgewatch.cli import main
from surgewatch.dashboards import OVERVIEW_UID, PIPELINE_UID, build_all, panel_queries
from surgewatch.dashboards.build import iter_panels, render, schema_errors
from surgewatch.dashboards.queries import run_queries
from surgewatch.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "dashboards"
SCHEMA_DIR = ROOT / "tools" / "grafana-schema"
SCHEMA_PATH = SCHEMA_DIR / "dashboard.schema.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
FILES = {"surgewatch-overview.json": OVERVIEW_UID, "surgewatch-pipeline.json": PIPELINE_UID}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Series Prometheus itself records for every target; Faust and the worker export no process_*.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    """The committed dashboards, by uid."""
    return {
        uid: json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
        for name, uid in FILES.items()
    }


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows left out)."""
    return [panel for panel in iter_panels(model) if panel["type"] != "row"]


def exported_series() -> set[str]:
    """Every series name a worker's /metrics can serve (counters with _total, histogram parts)."""
    metrics = Metrics(CollectorRegistry())
    metrics.watch_trends(lambda: None, top_k=20)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


# -- generated files ----------------------------------------------------------------------------


def test_committed_files_equal_a_fresh_build() -> None:
    built = build_all()
    assert sorted(built) == sorted(FILES)
    for name, text in built.items():
        committed = (DASHBOARDS_DIR / name).read_bytes()
        assert committed == text.encode("utf-8"), (
            f"{name} is stale: run surgewatch dashboards build"
        )


def test_build_is_deterministic_sorted_and_ends_with_a_newline() -> None:
    first, second = build_all(), build_all()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n") and not text.endswith("\n\n")
        assert render(json.loads(text)) == text  # keys sorted, two-space indent


def test_both_files_pass_the_grafana_dashboard_schema(
    models: dict[str, dict[str, Any]], schema: dict[str, Any]
) -> None:
    for uid, model in models.items():
        assert schema_errors(model, schema) == [], uid


def test_the_schema_catches_misspelt_and_mistyped_fields(
    models: dict[str, dict[str, Any]], schema: dict[str, Any]
) -> None:
    broken = json.loads(json.dumps(models[OVERVIEW_UID]))
    broken["schemaVersion"] = "41"
    broken["panels"][1]["gridpos"] = broken["panels"][1].pop("gridPos")
    broken["panels"][1]["fieldConfig"]["defaults"]["unit"] = 5
    errors = schema_errors(broken, schema)
    assert any(error.startswith("schemaVersion:") for error in errors)
    assert any("'gridpos' was unexpected" in error for error in errors)
    assert any(error.startswith("panels/1/fieldConfig/defaults/unit:") for error in errors)


@pytest.mark.skipif(
    not (SCHEMA_DIR / "node_modules").is_dir() or shutil.which("node") is None,
    reason="the schema tooling is not installed (cd tools/grafana-schema && npm ci)",
)
def test_committed_schema_equals_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.schema.json"
    subprocess.run(
        ["node", "generate.mjs", str(out)], cwd=SCHEMA_DIR, check=True, capture_output=True
    )
    assert out.read_bytes() == SCHEMA_PATH.read_bytes()


def test_check_command_passes_on_the_committed_files() -> None:
    result = CliRunner().invoke(main, ["dashboards", "check"])
    assert result.exit_code == 0, result.output
    assert "valid and up to date" in result.output


def test_check_command_fails_in_one_line_on_a_stale_or_invalid_file(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(DASHBOARDS_DIR / name, tmp_path / name)
    overview = tmp_path / "surgewatch-overview.json"
    overview.write_text(overview.read_text().replace('"refresh": "30s"', '"refresh": "1m"'))
    result = CliRunner().invoke(main, ["dashboards", "check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {overview} differs from a fresh build: run `surgewatch dashboards build`"
    ]
    model = json.loads(overview.read_text())
    model["schemaVersion"] = "41"
    overview.write_text(json.dumps(model))
    result = CliRunner().invoke(main, ["dashboards", "check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "breaks the dashboard schema at schemaVersion: '41' is not of type 'number'" in lines[0]


def test_build_command_writes_both_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dashboards", "build", "--dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (tmp_path / "out" / name).read_bytes() == (DASHBOARDS_DIR / name).read_bytes()


# -- dashboard content --------------------------------------------------------------------------


def test_uids_titles_and_tags(models: dict[str, dict[str, Any]]) -> None:
    assert set(models) == {"surgewatch-overview", "surgewatch-pipeline"}
    for uid, model in models.items():
        assert model["uid"] == uid
        assert model["title"].startswith("surgewatch / ")
        assert "surgewatch" in model["tags"]
        ids = [panel["id"] for panel in iter_panels(model)]
        assert ids == list(range(1, len(ids) + 1))
        titles = [panel["title"] for panel in panels(model)]
        assert len(titles) == len(set(titles)), f"{uid}: panel titles repeat"


def test_every_panel_has_a_unit_and_reads_the_datasource_variable(
    models: dict[str, dict[str, Any]],
) -> None:
    for uid, model in models.items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in panels(model):
            where = f"{uid} / {panel['title']}"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
            assert panel["datasource"] == DATASOURCE, where
            assert panel["targets"], f"{where} has no query"
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, where
                assert target["refId"], where
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == DATASOURCE


def test_overview_has_a_country_variable(models: dict[str, dict[str, Any]]) -> None:
    variables = {v["name"]: v for v in models[OVERVIEW_UID]["templating"]["list"]}
    country = variables["country"]
    assert country["type"] == "query"
    assert country["query"] == "label_values(surgewatch_signups_window, country)"
    assert country["multi"] and country["includeAll"]


def test_dashboards_link_to_each_other(models: dict[str, dict[str, Any]]) -> None:
    for uid, other in [(OVERVIEW_UID, PIPELINE_UID), (PIPELINE_UID, OVERVIEW_UID)]:
        links = models[uid]["links"]
        assert [link["url"] for link in links] == [f"/d/{other}/{other}"]
        assert all(link["keepTime"] and link["includeVars"] for link in links)
        data_links = [
            link["url"]
            for panel in panels(models[uid])
            for link in panel["fieldConfig"]["defaults"].get("links", [])
        ]
        assert any(url.startswith(f"/d/{other}/{other}?") for url in data_links), uid
        for url in data_links:
            assert re.match(rf"/d/({OVERVIEW_UID}|{PIPELINE_UID})/\1\?", url), url
            assert "${__url_time_range}" in url and "${datasource:queryparam}" in url


def test_surge_score_panels_mark_where_a_surge_starts(models: dict[str, dict[str, Any]]) -> None:
    from surgewatch.config import Settings

    start = Settings.model_fields["surge_z_start"].default
    for title in ["Signup surge score", "Surging hashtags", "All-signups surge score"]:
        (panel,) = [p for p in panels(models[OVERVIEW_UID]) if p["title"] == title]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert {"color": "red", "value": start} in steps


# -- queries ------------------------------------------------------------------------------------


def test_panel_queries_cover_every_target_and_leave_no_variable(
    models: dict[str, dict[str, Any]],
) -> None:
    for uid, model in models.items():
        queries = panel_queries(model, rate_interval="2m")
        assert len(queries) == sum(len(panel["targets"]) for panel in panels(model))
        for title, expr in queries:
            assert title and expr.strip(), uid
            assert "$" not in expr, expr
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        assert any("[2m]" in expr for _, expr in queries)
    assert panel_queries(DASHBOARDS_DIR / "surgewatch-overview.json") == panel_queries(
        models[OVERVIEW_UID]
    )


def test_queries_use_no_grafana_macro_but_rate_interval(models: dict[str, dict[str, Any]]) -> None:
    for model in models.values():
        variables = {v["name"] for v in model["templating"]["list"] if v["type"] == "query"}
        for panel in panels(model):
            for target in panel["targets"]:
                used = re.findall(r"\$\{?(\w+)", target["expr"])
                assert set(used) <= {"__rate_interval", *variables}, target["expr"]
                # A multi-value variable only makes sense in a regex matcher.
                for name in set(used) - {"__rate_interval"}:
                    assert re.search(rf'\w+=~"\${name}"', target["expr"]), target["expr"]


def test_queries_read_only_series_the_worker_exports(models: dict[str, dict[str, Any]]) -> None:
    exported = exported_series()
    for model in models.values():
        for title, expr in panel_queries(model):
            names = set(re.findall(r"[a-z_]+", re.sub(r'"[^"]*"', '""', expr)))
            series = {n for n in names if n.startswith("surgewatch_")}
            assert series <= exported, f"{title}: {series - exported}"
            assert series or names & PROMETHEUS_SERIES, f"{title}: {expr}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with `make setup`")
def test_every_query_parses_as_promql(tmp_path: Path, models: dict[str, dict[str, Any]]) -> None:
    # promtool 2.42 has no PromQL parser command; a rule file makes `check rules` parse each one.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, (_, expr) in enumerate(
            query for model in models.values() for query in panel_queries(model)
        )
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query: data for any query but those mentioning ``hashtag``."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        if "sort_desc" in query and "(" not in query:
            status, body = 400, {"status": "error", "error": "parse error"}
        else:
            result = [] if "hashtag" in query else [{"metric": {}, "value": [0, "1"]}]
            status, body = (
                200,
                {"status": "success", "data": {"resultType": "vector", "result": result}},
            )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_run_queries_reports_the_ones_without_data(fake_prometheus: str) -> None:
    outcomes = run_queries(fake_prometheus, [("a", "up"), ("b", "surgewatch_hashtag_surge_score")])
    assert [(o.title, o.has_data) for o in outcomes] == [("a", True), ("b", False)]
    (bad,) = run_queries(fake_prometheus, [("c", "sort_desc")])
    assert bad.error == "Prometheus answered 400: parse error" and not bad.has_data


def test_check_command_with_prometheus_names_the_empty_queries(fake_prometheus: str) -> None:
    result = CliRunner().invoke(main, ["dashboards", "check", "--prometheus", fake_prometheus])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    empty = [line for line in lines if line.startswith("no data: ")]
    assert empty and all("hashtag" in line for line in empty)
    assert any("surgewatch-overview / Top hashtags, last window" in line for line in empty)
    assert lines[-1].startswith(f"Error: {len(empty)} of ")


# -- provisioning -------------------------------------------------------------------------------


def test_datasource_provisioning_points_at_prometheus() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy" and source["isDefault"] is True


def test_dashboard_provisioning_loads_the_mounted_files() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "surgewatch.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "surgewatch"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
