"""Build the dashboard JSON files from code, and check committed files against a fresh build.

The files are deterministic: sorted keys, two-space indent, UTF-8, a trailing newline; panels
are numbered in grid order. ``check`` validates them against the JSON schema generated from
``@grafana/schema`` (``tools/grafana-schema/``) and compares them byte for byte with a build.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from jsonschema import Draft7Validator, ValidationError

from surgewatch.dashboards.overview import overview
from surgewatch.dashboards.pipeline import pipeline
from surgewatch.paths import project_root

#: File name in ``dashboards/`` -> the function that builds it.
DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "surgewatch-overview.json": overview,
    "surgewatch-pipeline.json": pipeline,
}

# The SDK types data links as dashboard links; Grafana's DataLink has only these fields.
_DATA_LINK_FIELDS = ("title", "url", "targetBlank")
# The SDK writes an interval variable's auto-step fields on every variable; they mean nothing on
# other variables and are not in @grafana/schema's VariableModel.
_INTERVAL_ONLY_FIELDS = ("auto", "auto_count", "auto_min")


class DashboardCheckError(Exception):
    """A dashboard file is missing, invalid or stale; the message is one line."""


def default_dashboards_dir() -> Path:
    """``dashboards/`` of the project."""
    return project_root() / "dashboards"


def default_schema_path() -> Path:
    """The committed JSON schema of a Grafana dashboard."""
    return project_root() / "tools" / "grafana-schema" / "dashboard.schema.json"


def iter_panels(model: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard in order, rows included, and the panels inside collapsed rows."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def to_model(builder: dash.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data: panels numbered, data links cut to Grafana's DataLink
    fields, SDK-only variable fields dropped."""
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(iter_panels(model), start=1):
        panel["id"] = number
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if "links" in defaults:
            defaults["links"] = [
                {field: link[field] for field in _DATA_LINK_FIELDS if field in link}
                for link in defaults["links"]
            ]
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for field in _INTERVAL_ONLY_FIELDS:
                variable.pop(field, None)
    return model


def render(model: Mapping[str, Any]) -> str:
    """The file text of a dashboard: sorted keys, indented, UTF-8 as is, trailing newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """File name -> file text of every dashboard."""
    return {name: render(to_model(make())) for name, make in DASHBOARDS.items()}


def write_all(directory: Path) -> list[Path]:
    """Write every dashboard file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def load_schema(path: Path) -> dict[str, Any]:
    """The dashboard JSON schema; a missing file says how to make it."""
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DashboardCheckError(
            f"no dashboard schema at {path}: run `npm ci && npm run generate` in tools/grafana-schema"
        ) from None
    except (OSError, ValueError) as exc:
        raise DashboardCheckError(f"cannot read the dashboard schema {path}: {exc}") from None
    return schema


def _leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """The errors that explain ``error``: inside an ``anyOf`` (a panel or a row), those of the
    branch that came closest, so a misspelt panel field is named rather than "not valid under
    any of the given schemas"."""
    if not error.context:
        yield error
        return
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    for sub in min(branches.values(), key=len):
        yield from _leaf_errors(sub)


def schema_errors(model: Any, schema: Mapping[str, Any]) -> list[str]:
    """One line per place where ``model`` breaks the schema (empty when it is valid)."""
    errors = [
        leaf for error in Draft7Validator(schema).iter_errors(model) for leaf in _leaf_errors(error)
    ]
    errors.sort(key=lambda error: [str(part) for part in error.absolute_path])
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
        for error in errors
    ]


def check_files(directory: Path, schema_path: Path) -> list[str]:
    """Problems with the dashboard files, one line each: missing, invalid JSON, schema, stale."""
    schema = load_schema(schema_path)
    fresh = build_all()
    problems = []
    for name, expected in fresh.items():
        path = directory / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(f"{path} is missing: run `surgewatch dashboards build`")
            continue
        try:
            model = json.loads(text)
        except ValueError as exc:
            problems.append(f"{path} is not JSON: {exc}")
            continue
        errors = schema_errors(model, schema)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            problems.append(f"{path} breaks the dashboard schema at {errors[0]}{more}")
        if text != expected:
            problems.append(f"{path} differs from a fresh build: run `surgewatch dashboards build`")
    return problems
