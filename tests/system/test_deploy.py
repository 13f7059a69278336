"""The packaging and deployment files agree with the app they ship: routes, port, secrets, image contents, gates."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from PIL import Image
from starlette.routing import Match

import app.entrypoints.api as launcher
from app.entrypoints.server import BoundedHttpProtocol
from app.http.schemas.common import SessionOut
from app.main import create_app
from app.settings import ENVIRONMENT_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ARTILLERY = ROOT / "artillery"
DOCKERFILE = ROOT / "Dockerfile"
SYSTEMD_UNIT = DEPLOY / "systemd" / "hazard-api.service"
WORKER_UNIT = DEPLOY / "systemd" / "hazard-worker.service"
WORKER_ENV_EXAMPLE = DEPLOY / "systemd" / "hazard-worker.env.example"
WORKER_DEPLOYMENT = K8S / "worker-deployment.yaml"
KEDA = K8S / "keda-scaledobject.yaml"  # optional (KEDA's CRDs): not in kustomization.yaml
STACK = ROOT / "scripts" / "stack.sh"
APP_PORT = 8000
UVICORN_GRACEFUL_SECONDS = 10  # --timeout-graceful-shutdown in every launcher
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), *ARTILLERY.rglob("*.yml")])
SCENARIOS = {"smoke": 60, "load": 600, "soak": 1800}  # scenario -> longest allowed run, seconds


def setting_default(name: str) -> float:
    field = ENVIRONMENT_FIELDS.get(name.upper())
    return float(field.default) if field is not None else 0.0


def shutdown_seconds(env: dict[str, Any]) -> float:
    """Worst-case stop time after SIGTERM: uvicorn's graceful shutdown, then the lifespan's drain and upload flush."""
    stages = ("SHUTDOWN_DRAIN_SECONDS", "UPLOAD_FLUSH_SECONDS")
    return UVICORN_GRACEFUL_SECONDS + sum(float(env.get(name, setting_default(name.lower()))) for name in stages)


def worker_shutdown_seconds(env: dict[str, Any]) -> float:
    """hazard-worker's worst-case stop after SIGTERM (Runtime.stop): the frames in hand, the drain, the upload flush."""
    stages = ("WORKER_SHUTDOWN_SECONDS", "SHUTDOWN_DRAIN_SECONDS", "UPLOAD_FLUSH_SECONDS")
    bound = sum(float(env.get(name, setting_default(name.lower()))) for name in stages)
    assert bound > float(env.get("WORKER_SHUTDOWN_SECONDS", setting_default("worker_shutdown_seconds")))
    return bound


def setting_names() -> set[str]:
    return set(ENVIRONMENT_FIELDS)


def model_cache_dir(env: dict[str, Any], workdir: str) -> str:
    """Where a process writes OpenVINO's compiled-model cache (MODEL_CACHE_DIR, relative to its working directory)."""
    cache = str(env.get("MODEL_CACHE_DIR", ENVIRONMENT_FIELDS["MODEL_CACHE_DIR"].default))
    return cache if cache.startswith("/") else f"{workdir}/{cache}"


def writable(path: str, roots: set[str]) -> bool:
    """Whether `path` lies in one of the writable mounts (or is one)."""
    return any(Path(path) == Path(root) or Path(root) in Path(path).parents for root in roots)


def load_yaml(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """The real app, built but not started: only its routing table is used."""
    return create_app(Settings(log_level="WARNING"))


def serves(app: FastAPI, method: str, path: str) -> bool:
    """Whether the app has a route for this method and concrete path (asked the way a request is routed)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


# --- Dockerfile ---------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions(stage, "ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert instructions(stage, "FROM")[0].split()[0] == "python:3.11-slim"


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = instructions(final_stage(), "USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_image_exposes_the_app_port() -> None:
    assert instructions(final_stage(), "EXPOSE") == [str(APP_PORT)]


def test_image_healthcheck_asks_liveness_on_the_app_port(app: FastAPI) -> None:
    (healthcheck,) = instructions(final_stage(), "HEALTHCHECK")
    url = re.search(r"http://[^'\"\s]+", healthcheck)
    assert url, healthcheck
    parts = urlsplit(url.group(0))
    assert parts.path == "/health/live" and serves(app, "GET", parts.path)
    assert parts.port == APP_PORT
    assert "curl" not in healthcheck  # python:3.11-slim has no curl


def test_image_serves_one_uvicorn_worker_on_all_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    (cmd,) = instructions(final_stage(), "CMD")
    argv = yaml.safe_load(cmd)  # the exec form is a JSON array
    assert argv[0] == "hazard-api"  # the installed console script, not a source checkout
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["hazard-api"] == "app.entrypoints.api:main"
    # What the script would hand uvicorn for the image's arguments (main() installs signal handlers: put them back).
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: calls.append((target, options)))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        launcher.main(argv[1:])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    ((target, options),) = calls
    assert target == "app.main:app"
    assert options["host"] == "0.0.0.0"
    assert options["port"] == APP_PORT
    assert options["workers"] == 1
    assert options["access_log"] is False
    assert options["timeout_graceful_shutdown"] == UVICORN_GRACEFUL_SECONDS
    # What one process accepts is bounded whatever the launcher's flags (app/entrypoints/server.py).
    assert issubclass(options["http"], BoundedHttpProtocol)
    assert options["limit_concurrency"] == options["http"].max_connections >= 1


def test_image_bakes_in_the_default_model_and_installs_the_app_wheel() -> None:
    builder, stage = dockerfile_stages()[0], final_stage()
    model_dir = ENVIRONMENT_FIELDS["MODEL_DIR"].default
    copies = [args.split() for args in instructions(stage, "COPY")]
    sources = {Path(parts[-2].rstrip("/")) for parts in copies if not parts[0].startswith("--")}
    assert model_dir in sources
    # The app runs as an installed package (its wheel carries app/assets), from the venv the builder filled.
    assert Path("app") not in sources
    assert ["--from=builder", "/opt/venv", "/opt/venv"] in copies
    builder_copies = {
        Path(source.rstrip("/")) for args in instructions(builder, "COPY") for source in args.split()[:-1]
    }
    assert {Path("app"), Path("pyproject.toml"), Path("README.md")} <= builder_copies  # README.md: [project].readme
    builder_runs = " ".join(instructions(builder, "RUN"))
    assert "pip wheel --no-deps" in builder_runs and "pip install --no-deps /build/dist/*.whl" in builder_runs
    (workdir,) = instructions(stage, "WORKDIR")
    assert dockerfile_env(stage).get("MODEL_DIR", str(model_dir)) in {str(model_dir), f"{workdir}/{model_dir}"}


def test_image_gets_runtime_dependencies_only() -> None:
    text = " ".join(args for stage in dockerfile_stages() for _, args in stage).lower()
    for forbidden in ("torch", "ultralytics", "[dev]", "[train]", "pip install -e", "pip install ."):
        assert forbidden not in text, forbidden
    # The builder installs the pinned closure of [project].dependencies (tests/system/test_package.py checks that the
    # lock is that closure), then the app's wheel without dependencies: neither may hold the training stack.
    builder_runs = instructions(dockerfile_stages()[0], "RUN")
    assert any("pip install -r requirements.lock" in run for run in builder_runs)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    for dependency in [*project["dependencies"], *pinned]:
        assert not re.match(r"(torch|torchvision|ultralytics|pytest|onnx)\b", dependency.lower()), dependency


def test_runtime_stage_installs_no_build_tools() -> None:
    runs = " ".join(instructions(final_stage(), "RUN")).lower()
    for tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert tool not in runs, tool


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".venv*", "build/", "var/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".env"):
        assert required in patterns, required
    for needed in ("app", "app/", "models", "models/", "pyproject.toml", "README.md", "requirements.lock", "*"):
        assert needed not in patterns, needed


# --- every YAML file -----------------------------------------------------------------------------------------


def test_deploy_and_artillery_hold_the_expected_yaml_files() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in YAML_FILES}
    expected = {
        "deploy/docker-compose.yml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/service.yaml",
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


# --- Kubernetes ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every manifest of the API's side under deploy/k8s by kind (one of each kind is expected); the worker's
    Deployment and the optional KEDA objects have fixtures of their own."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(set(K8S.glob("*.yaml")) - {WORKER_DEPLOYMENT, KEDA}):
        for doc in load_yaml(path):
            if "apiVersion" in doc and "kind" in doc and doc["kind"] != "Kustomization":
                assert doc["kind"] not in by_kind, f"two {doc['kind']} manifests"
                by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return dict(k8s["Deployment"]["spec"]["template"])


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_entry(container: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [entry for entry in container.get("env", []) if entry["name"] == name]
    assert len(matches) == 1, f"{name} set {len(matches)} times"
    return dict(matches[0])


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(match)


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_deployment_container_listens_on_the_app_port(container: dict[str, Any]) -> None:
    (port,) = container["ports"]
    assert port["containerPort"] == APP_PORT
    assert port["name"] == "http"


def test_service_maps_port_80_to_the_container_port(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    (port,) = k8s["Service"]["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == 80
    assert resolve_port(container, port["targetPort"]) == APP_PORT
    assert instructions(final_stage(), "EXPOSE") == [str(APP_PORT)]


def test_probes_hit_app_routes_on_the_app_port(container: dict[str, Any], app: FastAPI) -> None:
    expected = {"livenessProbe": "/health/live", "readinessProbe": "/health/ready"}
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[probe_name]["httpGet"]
        assert serves(app, "GET", probe["path"]), probe_name
        assert resolve_port(container, probe["port"]) == APP_PORT, probe_name
        if probe_name in expected:
            assert probe["path"] == expected[probe_name]


def test_startup_probe_allows_a_slow_model_load(container: dict[str, Any]) -> None:
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def test_cpu_matches_inference_threads_in_a_guaranteed_pod(container: dict[str, Any]) -> None:
    threads = int(env_entry(container, "MODEL_INFERENCE_THREADS")["value"])
    resources = container["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) == cpu_cores(resources["limits"]["cpu"]) == threads
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_redis_url_comes_from_a_secret(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    ref = env_entry(container, "REDIS_URL")["valueFrom"]["secretKeyRef"]
    secret = k8s["Secret"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert not ref.get("optional", False)


def test_cloudinary_url_is_an_optional_secret(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    ref = env_entry(container, "CLOUDINARY_URL")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == k8s["Secret"]["metadata"]["name"]
    assert ref["optional"] is True


def test_operator_secrets_are_optional_secrets_every_replica_shares(
    k8s: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    for name in ("ADMIN_PASSWORD_HASH", "ADMIN_SESSION_SECRET"):
        assert name in ENVIRONMENT_FIELDS
        ref = env_entry(container, name)["valueFrom"]["secretKeyRef"]
        assert ref["name"] == k8s["Secret"]["metadata"]["name"] and ref["optional"] is True
        assert ref["key"] in k8s["Secret"]["stringData"]


def test_no_secret_sits_in_plain_config(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    config = k8s.get("ConfigMap", {}).get("data", {})
    for name in ("REDIS_URL", "CLOUDINARY_URL"):
        assert name not in config
        assert "value" not in env_entry(container, name)


def test_secret_example_holds_placeholders_only(k8s: dict[str, dict[str, Any]]) -> None:
    values = k8s["Secret"]["stringData"].values()
    assert values and all("CHANGE_ME" in value for value in values)


def test_configmap_keys_are_settings(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    fields = set(ENVIRONMENT_FIELDS)
    names = set(k8s.get("ConfigMap", {}).get("data", {})) | {entry["name"] for entry in container["env"]}
    assert names <= fields, names - fields


def test_termination_grace_covers_prestop_and_drain(
    k8s: dict[str, dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    env = k8s.get("ConfigMap", {}).get("data", {})
    assert float(command[1]) + shutdown_seconds(env) < pod["spec"]["terminationGracePeriodSeconds"]


def test_pod_is_scraped_by_prometheus_on_metrics(pod: dict[str, Any], app: FastAPI) -> None:
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert serves(app, "GET", annotations["prometheus.io/path"])
    assert int(annotations["prometheus.io/port"]) == APP_PORT


def test_pod_runs_as_the_image_user(pod: dict[str, Any]) -> None:
    context = pod["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert str(context["runAsUser"]) == instructions(final_stage(), "USER")[-1].split(":")[0]


def test_writable_dirs_are_mounted_on_a_read_only_root(container: dict[str, Any]) -> None:
    if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        pytest.skip("root filesystem is writable")
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    env = dockerfile_env(final_stage())
    assert {env["STORAGE_DIR"], env["SPOOL_DIR"], "/tmp"} <= mounts
    # Loading a model creates MODEL_CACHE_DIR: on a read-only root that is an OSError, and no model.
    (workdir,) = instructions(final_stage(), "WORKDIR")
    plain = {entry["name"]: entry["value"] for entry in container["env"] if "value" in entry}
    assert writable(model_cache_dir(plain, workdir), mounts)


def test_selectors_pick_the_deployment_pods(k8s: dict[str, dict[str, Any]], pod: dict[str, Any]) -> None:
    labels = pod["metadata"]["labels"].items()
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels
    assert k8s["Service"]["spec"]["selector"].items() <= labels
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels
    assert k8s["PodDisruptionBudget"]["apiVersion"] == "policy/v1"


def test_hpa_scales_the_deployment_on_cpu(k8s: dict[str, dict[str, Any]]) -> None:
    hpa = k8s["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s["Deployment"]["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_kustomization_applies_everything_but_the_secret_example_and_keda() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    assert "secret.example.yaml" not in resources
    assert KEDA.name not in resources  # KEDA's CRDs may be absent: applied apart
    assert WORKER_DEPLOYMENT.name in resources
    assert resources == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml", KEDA.name}


# --- the worker (hazard-worker) on Kubernetes, and its optional KEDA scaler -----------------------------------


def metrics_probe_code(argv: list[str]) -> tuple[str, int]:
    """A probe written as `python -c <code>` that reads http://127.0.0.1:<port>/metrics: its code and port."""
    assert argv[:2] == ["python", "-c"], argv  # the image has python, not curl
    url = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", argv[2])
    assert url, argv[2]
    return argv[2], int(url[1])


def check_metrics_probe(code: str, port: int) -> None:
    """The probe's own code against the app's metrics registry (what hazard-worker serves), moved to a free port:
    it fails while no model is ready and passes once one is."""
    import sys

    from prometheus_client import start_http_server

    from app.services.observability.metrics import Metrics

    metrics = Metrics()
    local_port = free_port()
    server, _ = start_http_server(local_port, addr="127.0.0.1", registry=metrics.registry)
    local = code.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{local_port}/")

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30, check=False).returncode

    try:
        assert probe() != 0  # no model yet
        metrics.set_model_states({"v1": "available"}, {"name": "v1", "version": "1"})
        assert probe() == 0
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def worker_deployment() -> dict[str, Any]:
    (doc,) = load_yaml(WORKER_DEPLOYMENT)
    assert (doc["apiVersion"], doc["kind"]) == ("apps/v1", "Deployment")
    return doc


@pytest.fixture(scope="module")
def worker_pod(worker_deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(worker_deployment["spec"]["template"])


@pytest.fixture(scope="module")
def worker_container(worker_pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = worker_pod["spec"]["containers"]
    return dict(container)


def container_env(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The plain settings a container's process sees: its ConfigMap's data, then its own values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
        env.update(k8s["ConfigMap"]["data"])
    env.update({entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry})
    return env


def test_worker_deployment_runs_hazard_worker_from_the_api_image(
    worker_container: dict[str, Any], container: dict[str, Any]
) -> None:
    assert worker_container["command"] == ["hazard-worker"] and "args" not in worker_container
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["hazard-worker"] == "app.entrypoints.worker:main"
    assert worker_container["image"] == container["image"]


def test_worker_settings_exist_and_its_redis_url_is_the_apis_secret(
    k8s: dict[str, dict[str, Any]], worker_container: dict[str, Any], container: dict[str, Any]
) -> None:
    names = {entry["name"] for entry in worker_container["env"]}
    assert names <= setting_names(), names - setting_names()
    assert set(container_env(k8s, worker_container)) <= setting_names()
    ref = env_entry(worker_container, "REDIS_URL")["valueFrom"]["secretKeyRef"]
    assert ref == env_entry(container, "REDIS_URL")["valueFrom"]["secretKeyRef"]
    # Same queue as the API: FLEET_NAME (ConfigMap) is shared, and QUEUE_REDIS_URL is set on both or neither.
    assert "FLEET_NAME" not in names
    assert ("QUEUE_REDIS_URL" in names) == ("QUEUE_REDIS_URL" in {entry["name"] for entry in container["env"]})


def test_worker_metrics_port_is_declared_scraped_and_probed(
    k8s: dict[str, dict[str, Any]], worker_pod: dict[str, Any], worker_container: dict[str, Any]
) -> None:
    port = int(container_env(k8s, worker_container).get("WORKER_METRICS_PORT", setting_default("worker_metrics_port")))
    (declared,) = worker_container["ports"]
    assert (declared["name"], declared["containerPort"]) == ("metrics", port)
    annotations = worker_pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert (int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]) == (port, "/metrics")
    # No HTTP API: liveness is its metrics port answering (it does from before the model loads until exit) ...
    liveness = worker_container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/metrics" and resolve_port(worker_container, liveness["port"]) == port
    # ... and readiness is its model warm, read from those metrics by the probe's own code.
    code, probed = metrics_probe_code(worker_container["readinessProbe"]["exec"]["command"])
    assert probed == port
    check_metrics_probe(code, probed)


def test_worker_cpu_matches_inference_threads_in_a_guaranteed_pod(worker_container: dict[str, Any]) -> None:
    threads = int(env_entry(worker_container, "MODEL_INFERENCE_THREADS")["value"])
    resources = worker_container["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) == cpu_cores(resources["limits"]["cpu"]) == threads
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_worker_termination_grace_covers_its_shutdown(
    k8s: dict[str, dict[str, Any]], worker_pod: dict[str, Any], worker_container: dict[str, Any]
) -> None:
    env = container_env(k8s, worker_container)
    assert worker_pod["spec"]["terminationGracePeriodSeconds"] > worker_shutdown_seconds(env)
    assert "lifecycle" not in worker_container  # no preStop sleep to budget: no Service routes to it


def test_worker_pods_are_apart_from_the_api_pods(
    k8s: dict[str, dict[str, Any]], worker_deployment: dict[str, Any], worker_pod: dict[str, Any]
) -> None:
    labels = worker_pod["metadata"]["labels"].items()
    assert worker_deployment["spec"]["selector"]["matchLabels"].items() <= labels
    assert worker_deployment["metadata"]["name"] != k8s["Deployment"]["metadata"]["name"]
    for selector in (
        k8s["Service"]["spec"]["selector"],
        k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        k8s["Deployment"]["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels, selector
    assert k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] != worker_deployment["metadata"]["name"]


def test_worker_runs_as_the_image_user_with_writable_dirs_mounted(
    k8s: dict[str, dict[str, Any]], worker_pod: dict[str, Any], worker_container: dict[str, Any]
) -> None:
    context = worker_pod["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert str(context["runAsUser"]) == instructions(final_stage(), "USER")[-1].split(":")[0]
    if worker_container["securityContext"].get("readOnlyRootFilesystem"):
        image_env = dockerfile_env(final_stage())
        (workdir,) = instructions(final_stage(), "WORKDIR")
        mounts = {mount["mountPath"] for mount in worker_container["volumeMounts"]}
        cache = model_cache_dir(container_env(k8s, worker_container), workdir)
        for path in (image_env["STORAGE_DIR"], image_env["SPOOL_DIR"], "/tmp", cache):
            assert writable(path, mounts), path


@pytest.fixture(scope="module")
def keda() -> dict[str, dict[str, Any]]:
    by_kind = {doc["kind"]: doc for doc in load_yaml(KEDA)}
    assert set(by_kind) == {"ScaledObject", "TriggerAuthentication"}
    assert all(doc["apiVersion"] == "keda.sh/v1alpha1" for doc in by_kind.values())
    return by_kind


def saq_queued_key(fleet_name: str) -> str:
    """The Redis list of batch frames waiting for a worker, as the app's queue names it through SAQ."""
    from redis.asyncio import Redis
    from saq.queue.redis import RedisQueue

    from app.services.jobs.queue import FrameQueue, QueueLimits

    queue = FrameQueue(Redis(), fleet_name, QueueLimits(1, 1, 1, 1))  # a client never connected: names only
    assert isinstance(queue.batch, RedisQueue)
    return queue.batch.namespace("queued")


def test_keda_scales_the_worker_deployment_on_the_saq_batch_list(
    keda: dict[str, dict[str, Any]], k8s: dict[str, dict[str, Any]], worker_deployment: dict[str, Any]
) -> None:
    scaled = keda["ScaledObject"]["spec"]
    target = scaled["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", worker_deployment["metadata"]["name"])
    # Never to zero: remote-mode API processes send live frames to the workers, and a cold worker loads its model.
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis"
    fleet = k8s["ConfigMap"]["data"].get("FLEET_NAME", ENVIRONMENT_FIELDS["FLEET_NAME"].default)
    assert trigger["metadata"]["listName"] == saq_queued_key(fleet) == f"saq:{fleet}:batch:queued"
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert trigger["authenticationRef"]["name"] == keda["TriggerAuthentication"]["metadata"]["name"]
    # Its Redis address and password come from a Secret, never from the manifest.
    assert {"address", "host", "password"}.isdisjoint(trigger["metadata"])
    parameters = {ref["parameter"] for ref in keda["TriggerAuthentication"]["spec"]["secretTargetRef"]}
    assert {"address", "password"} <= parameters


# --- docker compose ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOY / "docker-compose.yml")
    return doc


def test_compose_redis_is_internal_only(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "ports" not in redis and "expose" not in redis
    assert redis["networks"]
    for network in redis["networks"]:
        assert compose["networks"][network]["internal"] is True


def test_compose_api_talks_to_the_redis_service(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert urlsplit(api["environment"]["REDIS_URL"]).hostname == "redis"
    assert set(compose["services"]["redis"]["networks"]) & set(api["networks"])
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_publishes_the_api_port(compose: dict[str, Any]) -> None:
    (mapping,) = compose["services"]["api"]["ports"]
    assert str(mapping).split(":")[-1] == str(APP_PORT)


def test_compose_healthchecks_hit_app_routes(compose: dict[str, Any], app: FastAPI) -> None:
    test = compose["services"]["api"]["healthcheck"]["test"]
    url = re.search(r"http://[^'\"\s]+", " ".join(test))
    assert url
    parts = urlsplit(url.group(0))
    assert serves(app, "GET", parts.path) and parts.port == APP_PORT
    assert compose["services"]["redis"]["healthcheck"]["test"]


def test_compose_keeps_uploads_and_spool_in_volumes(compose: dict[str, Any]) -> None:
    env = dockerfile_env(final_stage())
    targets = {volume.split(":")[1] for volume in compose["services"]["api"]["volumes"]}
    assert {env["STORAGE_DIR"], env["SPOOL_DIR"]} <= targets


def test_compose_stop_grace_covers_the_drain(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    grace = api["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > shutdown_seconds(api["environment"])


def test_compose_environments_name_settings(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        names = set(compose["services"][name]["environment"])
        assert names <= setting_names(), (name, names - setting_names())


def test_compose_worker_runs_hazard_worker_from_the_api_image_beside_redis(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert worker["command"] == ["hazard-worker"]
    assert (worker["image"], worker["build"]) == (api["image"], api["build"])
    assert "ports" not in worker and "container_name" not in worker  # `--scale worker=N` works
    env = worker["environment"]
    assert env["REDIS_URL"] == api["environment"]["REDIS_URL"] and urlsplit(env["REDIS_URL"]).hostname == "redis"
    assert env.get("FLEET_NAME") == api["environment"].get("FLEET_NAME")  # the queue they share
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(compose["services"]["redis"]["networks"]) & set(worker["networks"])
    assert float(worker["cpus"]) == float(env["MODEL_INFERENCE_THREADS"])


def test_compose_worker_healthcheck_reads_model_ready_on_its_metrics_port(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD"
    code, port = metrics_probe_code(test[1:])
    assert port == int(worker["environment"]["WORKER_METRICS_PORT"])
    assert str(port) in {str(item) for item in worker.get("expose", [])}
    check_metrics_probe(code, port)


def test_compose_worker_stop_grace_covers_its_shutdown(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    grace = worker["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > worker_shutdown_seconds(worker["environment"])


def test_compose_worker_has_writable_dirs_on_a_read_only_root(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    if not worker.get("read_only"):
        pytest.skip("root filesystem is writable")
    image_env = dockerfile_env(final_stage())
    (workdir,) = instructions(final_stage(), "WORKDIR")
    mounts = compose_writable_mounts(worker)
    cache = model_cache_dir(worker["environment"], workdir)
    for path in (image_env["STORAGE_DIR"], image_env["SPOOL_DIR"], "/tmp", cache):
        assert writable(path, mounts), path


def compose_writable_mounts(service: dict[str, Any]) -> set[str]:
    mounts = {entry.split(":")[0] for entry in service.get("tmpfs", [])}
    return mounts | {volume.split(":")[1] for volume in service.get("volumes", [])}


def test_compose_api_can_write_its_model_cache(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    if not api.get("read_only"):
        pytest.skip("root filesystem is writable")
    (workdir,) = instructions(final_stage(), "WORKDIR")
    assert writable(model_cache_dir(api["environment"], workdir), compose_writable_mounts(api))


# --- systemd -------------------------------------------------------------------------------------------------


class CaseSensitiveConfigParser(configparser.ConfigParser):
    """systemd keys are case-sensitive; ConfigParser lower-cases option names unless told otherwise."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    parser = CaseSensitiveConfigParser(strict=False, interpolation=None)
    parser.read(SYSTEMD_UNIT, encoding="utf-8")
    return parser


def test_systemd_unit_runs_the_launcher_from_a_venv_as_a_service_user(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").startswith("/")
    argv = shlex.split(service["ExecStart"])
    # hazard-api: one worker, the graceful shutdown and the connection bounds (test_image_serves_... checks them)
    assert argv[0].endswith("/bin/hazard-api") and "venv" in argv[0]
    assert argv[1:] == ["--host", "${HOST}", "--port", "${PORT}"]
    assert int(service["LimitNOFILE"]) >= ENVIRONMENT_FIELDS["HTTP_MAX_CONNECTIONS"].default + 256


def test_systemd_unit_writes_only_where_systemd_lets_it(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    if service.get("ProtectSystem") != "strict":
        pytest.skip("the file system is writable")
    env = unit_environment(SYSTEMD_UNIT)
    state = {f"/var/lib/{entry}" for entry in service.get("StateDirectory", "").split()}
    cache = {f"/var/cache/{entry}" for entry in service.get("CacheDirectory", "").split()}
    assert writable(env["STORAGE_DIR"], state) and writable(env["SPOOL_DIR"], state)
    assert writable(model_cache_dir(env, service["WorkingDirectory"]), state | cache)


def test_systemd_unit_restarts_on_failure_and_waits_for_the_drain(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > shutdown_seconds({})
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.fixture(scope="module")
def worker_unit() -> configparser.ConfigParser:
    parser = CaseSensitiveConfigParser(strict=False, interpolation=None)
    parser.read(WORKER_UNIT, encoding="utf-8")
    return parser


def unit_environment(path: Path) -> dict[str, str]:
    """Every Environment= assignment of a unit (ConfigParser keeps only the last of a repeated key)."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def env_example(path: Path) -> tuple[dict[str, str], set[str]]:
    """An env file's assignments, and every name it mentions (commented-out examples too)."""
    values: dict[str, str] = {}
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            names.add(match[2])
            if not match[1]:
                values[match[2]] = match[3]
    return values, names


def test_systemd_worker_unit_runs_hazard_worker_from_the_api_units_venv(
    worker_unit: configparser.ConfigParser, unit: configparser.ConfigParser
) -> None:
    service = worker_unit["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").startswith("/")
    (program,) = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/hazard-worker") and "venv" in program
    assert program.rsplit("/bin/", 1)[0] == shlex.split(unit["Service"]["ExecStart"])[0].rsplit("/bin/", 1)[0]
    env = unit_environment(WORKER_UNIT)
    assert set(env) - {"PYTHONUNBUFFERED"} <= setting_names()
    # ProtectSystem=strict: what it writes lives in the directories systemd makes writable for it.
    state = {f"/var/lib/{entry}" for entry in service["StateDirectory"].split()}
    assert {env["STORAGE_DIR"], env["SPOOL_DIR"]} <= state
    assert env["MODEL_CACHE_DIR"] in {f"/var/cache/{entry}" for entry in service["CacheDirectory"].split()}


def test_systemd_worker_unit_waits_for_the_frames_in_hand(worker_unit: configparser.ConfigParser) -> None:
    service = worker_unit["Service"]
    values, _ = env_example(WORKER_ENV_EXAMPLE)
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > worker_shutdown_seconds({**unit_environment(WORKER_UNIT), **values})
    assert worker_unit["Install"]["WantedBy"] == "multi-user.target"
    # No client connections, but Redis pools, one connection per queue consumer, OpenVINO, logs: above the
    # usual soft limit (1024) with room to spare.
    needed = sum(
        int(ENVIRONMENT_FIELDS[name].default)
        for name in ("REDIS_MAX_CONNECTIONS", "WORKER_BATCH_CONCURRENCY", "WORKER_LIVE_CONCURRENCY")
    )
    assert int(service["LimitNOFILE"]) >= max(1024, 4 * (needed + 256))


def test_systemd_worker_env_example_names_settings_and_holds_placeholders(
    worker_unit: configparser.ConfigParser,
) -> None:
    values, names = env_example(WORKER_ENV_EXAMPLE)
    assert names <= setting_names(), names - setting_names()
    assert {"REDIS_URL", "FLEET_NAME"} <= set(values)  # the queue the web tier uses
    assert "CHANGE_ME" in values["REDIS_URL"]
    port = values.get("WORKER_METRICS_PORT", unit_environment(WORKER_UNIT).get("WORKER_METRICS_PORT"))
    assert port and int(port) > 0  # a worker without metrics would be invisible


# --- Artillery -----------------------------------------------------------------------------------------------


def flow_requests(steps: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(method, request) for every request in a flow, loops included."""
    for step in steps:
        if "loop" in step:
            yield from flow_requests(step["loop"])
        for method in ("get", "post", "put", "patch", "delete"):
            if method in step:
                yield method, step[method]


def concrete(url: str) -> str:
    """An Artillery URL with its {{ variables }} filled in, as a request would carry it."""
    return re.sub(r"\{\{\s*\w+\s*\}\}", "0123abcd", url)


@pytest.fixture(params=sorted(SCENARIOS), scope="module")
def scenario(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    (doc,) = load_yaml(ARTILLERY / f"{request.param}.yml")
    return request.param, doc


def test_scenario_targets_the_local_server_for_a_bounded_time(scenario: tuple[str, dict[str, Any]]) -> None:
    name, doc = scenario
    target = urlsplit(doc["config"]["target"])
    assert (target.hostname, target.port) == ("127.0.0.1", APP_PORT)
    total = sum(phase["duration"] for phase in doc["config"]["phases"])
    assert 0 < total <= SCENARIOS[name]


def test_scenario_gates_p95_and_errors(scenario: tuple[str, dict[str, Any]]) -> None:
    ensure = scenario[1]["config"]["plugins"]["ensure"]
    thresholds = {key: value for item in ensure["thresholds"] for key, value in item.items()}
    assert thresholds["http.response_time.p95"] <= 150
    assert float(ensure["maxErrorRate"]) <= 1
    assert any("http.requests" in condition["expression"] for condition in ensure["conditions"])


def test_scenario_streams_real_frames_into_one_session(scenario: tuple[str, dict[str, Any]], app: FastAPI) -> None:
    doc = scenario[1]
    (flow,) = [s["flow"] for s in doc["scenarios"]]
    requests = list(flow_requests(flow))
    method, create = requests[0]
    assert (method, create["url"]) == ("post", "/sessions")
    (capture,) = create["capture"]
    assert capture["json"] == "$.session_id" and capture["as"] == "session_id"
    assert "session_id" in SessionOut.model_fields
    detects = [request for _, request in requests if request["url"].startswith("/detect/")]
    assert detects
    loops = [step for step in flow if "loop" in step]
    assert any(step.get("count", 1) >= 3 and list(flow_requests(step["loop"])) for step in loops)
    for request in detects:
        assert "{{ session_id }}" in request["url"]
        frame = (ARTILLERY / request["formData"]["file"]["fromFile"]).resolve()
        assert frame.is_file(), frame
        with Image.open(frame) as image:
            assert image.format == "JPEG"
    for method, request in requests:
        assert serves(app, method.upper(), concrete(request["url"])), request["url"]


def test_frame_is_a_committable_1280x720_jpeg() -> None:
    frame = ARTILLERY / "frames" / "road_1280x720.jpg"
    with Image.open(frame) as image:
        assert (image.format, image.size) == ("JPEG", (1280, 720))
    assert frame.stat().st_size < 200 * 1024


# --- operator stack ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_stack_script_is_strict_bash() -> None:
    text = STACK.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(STACK)], check=True, timeout=10)


def test_stack_waits_out_each_process_stop_before_sigkill() -> None:
    text = STACK.read_text(encoding="utf-8")
    api = re.search(r'^STOP_TIMEOUT="\$\{STOP_TIMEOUT:-(\d+)\}"', text, re.MULTILINE)
    worker = re.search(r'^WORKER_STOP_TIMEOUT="\$\{WORKER_STOP_TIMEOUT:-(\d+)\}"', text, re.MULTILINE)
    assert api and worker
    assert int(api[1]) > shutdown_seconds({})
    assert int(worker[1]) > worker_shutdown_seconds({})


def test_makefile_operator_targets_call_the_stack_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    declared = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert declared
    phony = set(declared[1].split())
    for target in ("up", "down", "status", "logs", "restart-web", "restart-worker"):
        assert target in phony, target
        recipe = re.search(rf"^{re.escape(target)}:.*\n\t(.*)$", makefile, re.MULTILINE)
        assert recipe and f"scripts/stack.sh {target}" in recipe[1], target


def test_stack_status_says_not_running_when_nothing_runs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RUN_DIR": str(tmp_path / "run"),
        "LOG_FILE": str(tmp_path / "api.log"),
        "PORT": str(free_port()),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "HOST": "127.0.0.1",
    }
    result = subprocess.run(
        ["bash", str(STACK), "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "api: not running" in result.stdout
    assert "worker: not running" in result.stdout
    assert "redis: not running" in result.stdout


STACK_KEPT_SETTINGS = ("FLEET_NAME", "QUEUE_REDIS_URL", "INFERENCE_MODE", "EMBEDDED_WORKER")  # stack.sh records them


def stack_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The stack's state (PID files, logs, Redis data, uploads, the worker's) under tmp_path: never the repo's var/."""
    given = {"HOST", "PORT", "REDIS_URL", "MAKEFLAGS", "WORKER_METRICS_PORT", *STACK_KEPT_SETTINGS}
    env = {key: value for key, value in os.environ.items() if key not in given}
    env.update(
        RUN_DIR=str(tmp_path / "run"),
        LOG_FILE=str(tmp_path / "log" / "api.log"),
        REDIS_DIR=str(tmp_path / "redis"),
        STORAGE_DIR=str(tmp_path / "uploads"),
        SPOOL_DIR=str(tmp_path / "spool"),
        READY_TIMEOUT="60",
    )
    env.update(values)
    return env


def stack(command: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ensure_redis(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What `make run` does before it serves."""
    script = ROOT / "scripts" / "ensure-redis.sh"
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)


def wait_until(predicate: Any, seconds: float = 10) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def recorded_pid(path: Path) -> int:
    return int(path.read_text(encoding="utf-8").split()[0])


def kill_recorded(run_dir: Path) -> None:
    """Last resort after a failed test: stop whatever the stack recorded under this test's own run dir."""
    import signal

    for record in run_dir.glob("*.pid") if run_dir.is_dir() else []:
        try:
            pid = recorded_pid(record)
            os.kill(pid, signal.SIGTERM)
            if not wait_until(lambda pid=pid: not pid_alive(pid), 20):
                os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


@pytest.fixture
def stack_dirs(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_recorded(tmp_path / "run")


def test_makefile_passes_host_and_port_to_the_stack_only_when_given(tmp_path: Path) -> None:
    env = stack_env(tmp_path)

    def recipe(*args: str, extra: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", *args],
            cwd=ROOT,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()

    for target in ("status", "down"):
        assert "PORT=" not in recipe(target) and "HOST=" not in recipe(target)
        assert "PORT='8123'" in recipe(target, "PORT=8123")
        assert "HOST='0.0.0.0'" in recipe(target, extra={"HOST": "0.0.0.0"})
    assert recipe("run").endswith("/hazard-api --host 127.0.0.1 --port 8000")
    assert recipe("run", "PORT=8123").endswith(" --port 8123")


def test_stack_down_is_harmless_when_nothing_ever_ran(stack_dirs: Path) -> None:
    env = stack_env(stack_dirs, PORT=str(free_port()), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for _ in range(2):
        result = stack("down", env)
        assert result.returncode == 0, result.stderr
        assert "api not running" in result.stdout


def test_redis_started_for_make_run_is_recorded_and_stopped_by_down(stack_dirs: Path) -> None:
    redis_port = free_port()
    env = stack_env(stack_dirs, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    started = ensure_redis(env)
    assert started.returncode == 0, started.stderr
    record = stack_dirs / "run" / f"redis-{redis_port}.pid"
    assert redis_answers(redis_port) and pid_alive(recorded_pid(record))
    assert (stack_dirs / "redis" / str(redis_port) / "redis.log").is_file()
    pid = recorded_pid(record)

    stopped = stack("down", stack_env(stack_dirs))  # no REDIS_URL: the record says which Redis is ours
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until(lambda: not redis_answers(redis_port))
    assert not pid_alive(pid) and not record.exists()


def test_stack_never_stops_a_redis_it_did_not_start(stack_dirs: Path) -> None:
    from tests.support.redis_process import RedisProcess

    foreign = RedisProcess(stack_dirs / "foreign")
    foreign.start()
    try:
        env = stack_env(stack_dirs, REDIS_URL=foreign.url)
        seen = ensure_redis(env)
        assert seen.returncode == 0, seen.stderr
        assert "not started here" in seen.stdout
        assert not list((stack_dirs / "run").glob("redis-*.pid"))
        assert stack("down", env).returncode == 0
        assert redis_answers(foreign.port)
    finally:
        foreign.kill()


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process was started with (Linux /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def metrics_text(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def batch_frames_done(metrics: str) -> float:
    done = 'hazard_queued_frames_total{outcome="done",priority="batch"}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(done))


def run_one_frame_job(base: str) -> None:
    """A batch job of one frame through the API, until it completes."""
    import httpx

    frame = (ARTILLERY / "frames" / "road_1280x720.jpg").read_bytes()
    with httpx.Client(base_url=base, timeout=30) as client:
        job_id = client.post("/jobs", json={"name": "stack"}).json()["job_id"]
        added = client.post(f"/jobs/{job_id}/frames", files=[("file", ("road.jpg", frame, "image/jpeg"))])
        assert added.status_code == 202, added.text
        assert client.post(f"/jobs/{job_id}/close").status_code == 200
        assert wait_until(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "completed", 30)
        assert client.get(f"/jobs/{job_id}").json()["done"] == 1


def test_stack_keeps_only_settings_the_app_has() -> None:
    kept = re.search(r'^KEPT_SETTINGS="([^"]*)"', STACK.read_text(encoding="utf-8"), re.MULTILINE)
    assert kept and tuple(kept[1].split()) == STACK_KEPT_SETTINGS
    assert set(STACK_KEPT_SETTINGS) <= setting_names()


def test_stack_up_runs_the_api_and_a_worker_restarts_each_alone_and_down_stops_all(stack_dirs: Path) -> None:
    if not os.access(ROOT / ".venv" / "bin" / "hazard-api", os.X_OK):
        pytest.skip(".venv is not installed (make run or make test installs it)")
    import uuid

    port, redis_port, metrics_port = free_port(), free_port(), free_port()
    fleet = f"stack-{uuid.uuid4().hex[:8]}"
    base = f"http://127.0.0.1:{port}"
    run_dir = stack_dirs / "run"
    told = stack_env(
        stack_dirs,
        PORT=str(port),
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        WORKER_METRICS_PORT=str(metrics_port),
        FLEET_NAME=fleet,
    )
    untold = stack_env(stack_dirs)  # no PORT, REDIS_URL, WORKER_METRICS_PORT, FLEET_NAME: all from the records

    up = stack("up", told, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    assert http_status(f"{base}/health/ready") == 200
    assert "\nhazard_model_ready 1.0" in metrics_text(metrics_port)  # `up` returns once the worker's model is warm
    assert redis_answers(redis_port)
    api_pid = recorded_pid(run_dir / "api.pid")
    worker_pid = recorded_pid(run_dir / "worker.pid")
    redis_pid = recorded_pid(run_dir / f"redis-{redis_port}.pid")
    for record in ("api.env", "worker.env"):
        assert (run_dir / record).stat().st_mode & 0o077 == 0  # REDIS_URL may hold a password
    api_env, worker_env = process_environment(api_pid), process_environment(worker_pid)
    assert api_env["EMBEDDED_WORKER"] == "false"  # the worker takes the batch frames
    assert api_env["FLEET_NAME"] == worker_env["FLEET_NAME"] == fleet  # one queue
    assert worker_env["WORKER_METRICS_PORT"] == str(metrics_port)
    assert worker_env["SPOOL_DIR"] != api_env["SPOOL_DIR"]  # never retries the API's spooled uploads

    status = stack("status", untold)
    assert status.returncode == 0, status.stderr
    assert f"api: running (pid {api_pid}) on {base}" in status.stdout
    assert f"EMBEDDED_WORKER=false FLEET_NAME={fleet}" in status.stdout
    assert f"worker: running (pid {worker_pid}), metrics on http://127.0.0.1:{metrics_port}/metrics" in status.stdout
    assert "model ready -> yes" in status.stdout
    assert f"redis: answering on 127.0.0.1:{redis_port}" in status.stdout
    assert f"redis: pid {redis_pid} on port {redis_port} started by" in status.stdout

    run_one_frame_job(base)
    assert batch_frames_done(metrics_text(metrics_port)) == 1  # the worker worked it, not the API

    elsewhere = stack("up", {**untold, "PORT": str(free_port())})
    assert elsewhere.returncode != 0 and f"already running on {base}" in elsewhere.stderr
    other_metrics = stack("up", {**untold, "WORKER_METRICS_PORT": str(free_port())})
    assert other_metrics.returncode != 0
    assert f"worker already running with metrics on port {metrics_port}" in other_metrics.stderr
    assert pid_alive(api_pid) and pid_alive(worker_pid)

    restarted = stack("restart-web", untold, timeout=120)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not pid_alive(api_pid)
    api_pid = recorded_pid(run_dir / "api.pid")
    assert http_status(f"{base}/health/ready") == 200
    assert process_environment(api_pid)["FLEET_NAME"] == fleet
    assert pid_alive(worker_pid) and recorded_pid(run_dir / "worker.pid") == worker_pid  # its model stays loaded
    assert batch_frames_done(metrics_text(metrics_port)) == 1

    restarted = stack("restart-worker", untold, timeout=120)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not pid_alive(worker_pid)
    worker_pid = recorded_pid(run_dir / "worker.pid")
    assert "\nhazard_model_ready 1.0" in metrics_text(metrics_port)  # a fresh process on the recorded port
    assert process_environment(worker_pid)["FLEET_NAME"] == fleet
    assert pid_alive(api_pid) and recorded_pid(run_dir / "api.pid") == api_pid
    assert http_status(f"{base}/health/ready") == 200

    down = stack("down", untold, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_until(lambda: http_status(f"{base}/health/live") == 0)
    assert wait_until(lambda: not metrics_text(metrics_port))
    assert wait_until(lambda: not redis_answers(redis_port))
    assert not pid_alive(api_pid) and not pid_alive(worker_pid) and not pid_alive(redis_pid)
    assert not list(run_dir.iterdir())

    again = stack("down", untold)
    assert again.returncode == 0, again.stderr
    assert "api not running" in again.stdout and "worker not running" in again.stdout
