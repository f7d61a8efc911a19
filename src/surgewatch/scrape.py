"""Reading a worker's ``/metrics`` page: every sample by name and labels."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(
    url: str, timeout_seconds: float = 5.0
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """All samples at a ``/metrics`` URL, keyed by (sample name, label set)."""
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0.0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def sample_sum(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))
