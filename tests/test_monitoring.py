"""deploy/prometheus-rules.yml and deploy/grafana-dashboard.json: they parse, every metric (and
label value) they name is one the lane service exports, and, where Debian's promtool is installed
(scripts/test.sh installs it), the rules pass `promtool check rules` and their unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from edge_fixtures import metrics
from monitoring_files import DASHBOARD, OWN_METRIC, RULE_TESTS, RULES

yaml = pytest.importorskip("yaml")  # PyYAML, the [dev] extra
SELECTOR = re.compile(r"\b((?:reid|process)_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=|!=|=~|!~)\s*"([^"]*)"')
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus, not by the exporter


def _exported() -> dict[str, set[tuple[str, str]]]:
    """Every sample name the exporter writes, with the (label, value) pairs it carries."""
    out: dict[str, set[tuple[str, str]]] = {}
    for line in metrics().render().splitlines():
        if line.startswith("#"):
            continue
        name, _, labels = line.split(" ")[0].partition("{")
        out.setdefault(name, set()).update(MATCHER.findall(labels))
    return out


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _check_names(text: str, where: str) -> None:
    exported = _exported()
    for name in OWN_METRIC.findall(text):
        assert name in exported, f"{where}: {name} is not in the exporter's output"
    for name, matchers in SELECTOR.findall(text):
        for label, value in MATCHER.findall(matchers):
            if label not in SCRAPE_LABELS and "$" not in value:
                assert (label, value) in exported[name], f"{where}: {name} has no series {label}={value!r}"


def test_the_rules_parse_and_name_only_exported_metrics():
    rules = _rules()
    assert len(rules) >= 10 and len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"], rule["alert"]
        _check_names(rule["expr"], rule["alert"])
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            _check_names(series["series"], "prometheus-rules.test.yml")


def test_the_check_catches_a_metric_the_exporter_does_not_have():
    with pytest.raises(AssertionError, match="reid_frames_lost_total is not in"):
        _check_names("rate(reid_frames_lost_total[5m])", "test")
    with pytest.raises(AssertionError, match="has no series reason='late'"):
        _check_names('reid_frames_dropped_total{reason="late"}', "test")


def test_the_dashboard_parses_and_names_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    for expr in exprs:
        assert set(re.findall(r"\$(\w+)", expr)) <= variables, expr
        _check_names(expr, "grafana-dashboard.json")
    # Every metric the service exports is on the dashboard.
    shown = {m for expr in exprs for m in OWN_METRIC.findall(expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in _exported()}
    assert not {f for f in families if not any(s.startswith(f) for s in shown)}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
