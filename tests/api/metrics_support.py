"""Reading the service's Prometheus metrics in tests: ``scrape`` an endpoint, ``parse`` its text into
Samples, look one ``value`` up by name and labels, and poll ``until`` a condition holds (the service runs
in another process).  test_metrics.py and test_nginx_cache.py share them; they live here because a test
module must not import from another test module.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        return parse(resp.read().decode())


def until(predicate: object, what: str, deadline_s: float = 20.0) -> None:
    """Poll an observable condition (the service runs in another process: there is no event to wait on)."""
    assert callable(predicate)
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
