"""Where the project's own files are: the source checkout the package runs from."""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The source checkout this package runs from, else the working directory."""
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file() and (candidate / "dashboards").is_dir():
        return candidate
    return Path.cwd()
