"""The monitoring files in deploy/ and the metric names they query, shared by the tests that check
them against the exporter (test_monitoring.py) and against a running service's /metrics
(test_edge_service.py)."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES, RULE_TESTS, DASHBOARD = (
    DEPLOY / "prometheus-rules.yml",
    DEPLOY / "prometheus-rules.test.yml",
    DEPLOY / "grafana-dashboard.json",
)
OWN_METRIC = re.compile(r"\b(?:reid|process)_[a-z_]+\b")  # this service's metrics and the standard process ones


def queried_metrics() -> set[str]:
    """Every reid_* and process_* name the dashboard and the alert rules mention: in their queries,
    and in the rules' annotations (a histogram there by its family name)."""
    return {name for path in (RULES, DASHBOARD) for name in OWN_METRIC.findall(path.read_text())}
