"""The monitoring files hold together: the rules pass promtool and their unit tests (a firing and a quiet case per
alert), every alert has its runbook section, the PrometheusRule is the rules file, the Kubernetes component is
optional and builds, and the dashboards are provisioning-ready."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from render_prometheusrule import PROMETHEUS_RULE, RULES, render_prometheus_rule

from tests.support.prometheus import prometheus_binary

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy" / "monitoring"
RULES_TEST = MONITORING / "alerts_test.yml"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
K8S = ROOT / "deploy" / "k8s"
COMPONENT = K8S / "monitoring"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_binary("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    cases = [case for group in load(RULES_TEST)["tests"] for case in group.get("alert_rule_test", [])]
    for alert in alerts():
        own = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case.get("exp_alerts") for case in own), f"{alert['alert']}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in own), f"{alert['alert']}: no case where it stays quiet"


def test_every_alert_says_what_happened_and_links_its_runbook_section() -> None:
    headings = {line[3:].strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for alert in alerts():
        name, annotations = alert["alert"], alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/RUNBOOK.md#{name.lower()}", name
        assert name in headings, f"docs/RUNBOOK.md has no '## {name}' section"
        assert alert["labels"]["severity"] in {"page", "ticket", "warning"}, name


def test_the_prometheus_rule_is_the_rules_file() -> None:
    """The PrometheusRule cannot drift from alerts.yml: its spec is that file, written by the render script."""
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule(RULES.read_text()), (
        "deploy/k8s/monitoring/prometheusrule.yaml is stale: run `python scripts/render_prometheusrule.py`"
    )
    rule = load(PROMETHEUS_RULE)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == load(RULES)


def test_monitoring_is_an_optional_kustomize_component() -> None:
    component = load(COMPONENT / "kustomization.yaml")
    assert component["kind"] == "Component"
    assert set(component["resources"]) == {p.name for p in COMPONENT.glob("*.yaml")} - {"kustomization.yaml"}
    assert "components" not in load(K8S / "kustomization.yaml"), "monitoring needs the operator's CRDs: opt-in only"
    kinds = {load(COMPONENT / name)["kind"] for name in component["resources"]}
    assert kinds == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    # The rules select on these job names: the ServiceMonitor's is its Service's name, the PodMonitor sets its own.
    (service,) = [doc for doc in yaml.safe_load_all((K8S / "service.yaml").read_text()) if doc["kind"] == "Service"]
    monitor = load(COMPONENT / "servicemonitor.yaml")
    assert service["metadata"]["name"] == "hazard-api"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    (endpoint,) = load(COMPONENT / "podmonitor.yaml")["spec"]["podMetricsEndpoints"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "hazard-worker"} in endpoint["relabelings"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_the_component_builds_when_enabled_as_documented(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s")
    with (tmp_path / "k8s" / "kustomization.yaml").open("a") as kustomization:
        kustomization.write("components:\n  - monitoring\n")
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, timeout=60, check=True
    )
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout)]
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Deployment"} <= set(kinds)


def test_dashboards_are_provisioning_ready_with_a_datasource_variable_and_no_fixed_instance() -> None:
    assert {path.stem for path in DASHBOARDS} == {"api", "workers", "models", "hazards", "processes"}
    dashboards = [json.loads(path.read_text()) for path in DASHBOARDS]
    uids = [dashboard["uid"] for dashboard in dashboards]
    assert len(set(uids)) == len(uids)
    for dashboard in dashboards:
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert "id" not in dashboard, "provisioned dashboards are found by uid; a fixed id collides"
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
                # Instances and jobs come from the variables, never from the file.
                assert not re.search(r'\b(instance|job)=~?"(?!\$)', target["expr"]), (panel["title"], target["expr"])


def test_grafana_provisioning_files_name_a_prometheus_datasource_and_a_file_provider() -> None:
    (datasource,) = load(MONITORING / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    (provider,) = load(MONITORING / "provisioning" / "dashboards" / "hazard-api.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
