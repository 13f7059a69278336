"""Every YAML file under deploy/ and artillery/ is there and parses to mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.deploy.common import (
    ARTILLERY,
    DEPLOY,
    ROOT,
    SCENARIOS,
    load_yaml,
)

YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), *ARTILLERY.rglob("*.yml")])


def test_deploy_and_artillery_hold_the_expected_yaml_files() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in YAML_FILES}
    expected = {
        "deploy/docker-compose.yml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/service.yaml",
        "deploy/k8s/ingress.yaml",
        "deploy/k8s/hpa.yaml",
        "deploy/k8s/pdb.yaml",
        "deploy/k8s/secret.example.yaml",
        "deploy/k8s/worker-deployment.yaml",
        "deploy/k8s/keda-scaledobject.yaml",
        *(f"artillery/{name}.yml" for name in SCENARIOS),
    }
    assert expected <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yaml_file_parses_to_mappings(path: Path) -> None:
    documents = load_yaml(path)
    assert documents
    assert all(isinstance(doc, dict) for doc in documents)
