"""Deploy artefacts are valid for the real tools, and every alert is documented and tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "deploy/alertmanager/alertmanager.yml"
RUNBOOK = ROOT / "docs/runbook.md"
RUNBOOK_URL = "https://github.com/surgewatch/surgewatch/blob/main/docs/runbook.md#"
DASHBOARD_UIDS = ("surgewatch-overview", "surgewatch-pipeline")
#: The alerts the contract names (CONTRACT.md, "Deploy artefacts").
REQUIRED_ALERTS = {"SignupSurge", "HashtagSurge", "PipelineStalled", "HighRejectRate", "WorkerDown"}
ANNOTATIONS = ("summary", "description", "runbook_url", "dashboard_url")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package 'prometheus'; `make setup` installs it)",
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not installed (Debian package 'prometheus-alertmanager'; `make setup` installs it)",
)


def _run(*args: str) -> tuple[int, str]:
    """Run a tool from the repository root; its exit code and its stdout and stderr together."""
    result = subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    return result.returncode, result.stdout + result.stderr


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of ``kind`` (``alert`` or ``record``) in the rule files."""
    return [
        rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, '-' for spaces."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_deploy_files_exist() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus/rules/"
    assert TEST_FILES, "no promtool tests in deploy/prometheus/tests/"
    assert ALERTMANAGER_CONFIG.is_file()
    assert RUNBOOK.is_file()


@needs_promtool
def test_prometheus_config_passes_promtool() -> None:
    code, output = _run("promtool", "check", "config", str(CONFIG))
    assert code == 0, output
    assert "SUCCESS" in output


def test_prometheus_config_loads_every_rule_file_and_sends_to_alertmanager() -> None:
    config = _load(CONFIG)
    loaded = {path for pattern in config["rule_files"] for path in CONFIG.parent.glob(pattern)}
    assert loaded == set(RULE_FILES)
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # WorkerDown matches the workers by this job name.
    workers = jobs["surgewatch"]["static_configs"][0]["targets"]
    assert workers == ["worker-1:6066", "worker-2:6066"]
    assert "prometheus" in jobs


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    code, output = _run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert code == 0, output
    assert output.count("SUCCESS") == len(RULE_FILES), output


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    # Relative paths, as `promtool test rules deploy/prometheus/tests/*.yml` from the root runs them.
    paths = [str(path.relative_to(ROOT)) for path in TEST_FILES]
    code, output = _run("promtool", "test", "rules", *paths)
    assert code == 0, output
    assert output.count("SUCCESS") == len(TEST_FILES), output
    assert "FAILED" not in output


@needs_amtool
def test_alertmanager_config_passes_amtool() -> None:
    code, output = _run("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert code == 0, output
    assert "SUCCESS" in output


@needs_amtool
@pytest.mark.parametrize("severity", ["page", "warning"])
def test_alertmanager_routes_by_severity(severity: str) -> None:
    # --verify.receivers makes amtool exit non-zero when the alert reaches another receiver.
    code, output = _run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={severity}",
        "alertname=SignupSurge",
        f"severity={severity}",
    )
    assert code == 0, output


def test_alertmanager_inhibits_a_down_workers_alerts_of_the_same_instance() -> None:
    (rule,) = _load(ALERTMANAGER_CONFIG)["inhibit_rules"]
    assert rule["source_matchers"] == ['alertname="WorkerDown"']
    assert rule["target_matchers"] == ['alertname=~"PipelineStalled|SignupSurge|HashtagSurge"']
    assert rule["equal"] == ["instance"]


def test_every_alert_has_for_severity_and_annotations() -> None:
    alerts = _rules("alert")
    assert {rule["alert"] for rule in alerts} >= REQUIRED_ALERTS
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no `for:`"
        assert rule.get("labels", {}).get("severity") in {"page", "warning"}, name
        annotations = rule.get("annotations", {})
        for key in ANNOTATIONS:
            assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        dashboard = urlsplit(annotations["dashboard_url"]).path
        assert dashboard in {f"/d/{uid}" for uid in DASHBOARD_UIDS}, f"{name}: {dashboard}"


def test_every_runbook_url_names_a_runbook_heading() -> None:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {_github_anchor(heading) for heading in headings}
    for rule in _rules("alert"):
        url = rule["annotations"]["runbook_url"]
        anchor = url.partition("#")[2]
        assert anchor in anchors, f"{rule['alert']}: {url} has no heading in docs/runbook.md"


def test_every_alert_fires_in_one_promtool_case_and_stays_quiet_in_another() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                if "exp_alerts" not in check:
                    continue
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules("alert")}
    assert alerts - firing == set(), "alerts without a case where they fire"
    assert alerts - quiet == set(), "alerts without an `exp_alerts: []` case"


def test_every_recording_rule_has_its_value_tested() -> None:
    exprs = [
        check["expr"]
        for path in TEST_FILES
        for case in _load(path)["tests"]
        for check in case.get("promql_expr_test", [])
    ]
    untested = [
        rule["record"]
        for rule in _rules("record")
        if not any(rule["record"] in expr for expr in exprs)
    ]
    assert untested == []


def test_promtool_tests_load_rule_files_by_relative_path() -> None:
    for path in TEST_FILES:
        for rule_file in _load(path)["rule_files"]:
            assert not Path(rule_file).is_absolute(), f"{path.name}: {rule_file}"
            assert (path.parent / rule_file).resolve() in RULE_FILES, f"{path.name}: {rule_file}"
