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

import app.__main__ as launcher
from app.main import create_app
from app.schemas import SessionOut
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ARTILLERY = ROOT / "artillery"
DOCKERFILE = ROOT / "Dockerfile"
SYSTEMD_UNIT = DEPLOY / "systemd" / "hazard-api.service"
STACK = ROOT / "scripts" / "stack.sh"
APP_PORT = 8000
UVICORN_GRACEFUL_SECONDS = 10  # --timeout-graceful-shutdown in every launcher
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), *ARTILLERY.rglob("*.yml")])
SCENARIOS = {"smoke": 60, "load": 600, "soak": 1800}  # scenario -> longest allowed run, seconds


def setting_default(name: str) -> float:
    field = Settings.model_fields.get(name)
    return float(field.default) if field is not None else 0.0


def shutdown_seconds(env: dict[str, Any]) -> float:
    """Worst-case stop time after SIGTERM: uvicorn's graceful shutdown, then the lifespan's drain and upload flush."""
    stages = ("SHUTDOWN_DRAIN_SECONDS", "UPLOAD_FLUSH_SECONDS")
    return UVICORN_GRACEFUL_SECONDS + sum(float(env.get(name, setting_default(name.lower()))) for name in stages)


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
    assert scripts["hazard-api"] == "app.__main__:main"
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


def test_image_bakes_in_the_default_model_and_installs_the_app_wheel() -> None:
    builder, stage = dockerfile_stages()[0], final_stage()
    model_dir = Settings.model_fields["model_dir"].default
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
    # The builder installs the pinned closure of [project].dependencies (tests/test_package.py checks that the lock
    # is that closure), then the app's wheel without dependencies: neither may hold the training stack.
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
    """Every manifest under deploy/k8s by kind (one of each kind is expected)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
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


def test_no_secret_sits_in_plain_config(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    config = k8s.get("ConfigMap", {}).get("data", {})
    for name in ("REDIS_URL", "CLOUDINARY_URL"):
        assert name not in config
        assert "value" not in env_entry(container, name)


def test_secret_example_holds_placeholders_only(k8s: dict[str, dict[str, Any]]) -> None:
    values = k8s["Secret"]["stringData"].values()
    assert values and all("CHANGE_ME" in value for value in values)


def test_configmap_keys_are_settings(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
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


def test_kustomization_applies_everything_but_the_secret_example() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    assert "secret.example.yaml" not in resources
    assert resources == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}


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


def test_systemd_unit_runs_uvicorn_from_a_venv_as_a_service_user(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").startswith("/")
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/bin/uvicorn") and "venv" in argv[0]
    assert argv[1] == "app.main:app"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--timeout-graceful-shutdown") + 1] == str(UVICORN_GRACEFUL_SECONDS)


def test_systemd_unit_restarts_on_failure_and_waits_for_the_drain(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > shutdown_seconds({})
    assert unit["Install"]["WantedBy"] == "multi-user.target"


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


def test_makefile_operator_targets_call_the_stack_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    declared = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert declared
    phony = set(declared[1].split())
    for target in ("up", "down", "status", "logs", "restart-web"):
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
    assert "redis: not running" in result.stdout


def stack_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The stack's state (PID files, log, Redis data, uploads) under tmp_path: never the repo's var/."""
    env = {key: value for key, value in os.environ.items() if key not in {"HOST", "PORT", "REDIS_URL", "MAKEFLAGS"}}
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
    assert "--host 127.0.0.1 --port 8000 " in recipe("run")
    assert "--port 8123 " in recipe("run", "PORT=8123")


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


def test_stack_up_remembers_its_port_and_down_stops_the_api_and_its_redis(stack_dirs: Path) -> None:
    if not os.access(ROOT / ".venv" / "bin" / "uvicorn", os.X_OK):
        pytest.skip(".venv is not installed (make run or make test installs it)")
    port, redis_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    run_dir = stack_dirs / "run"
    told = stack_env(stack_dirs, PORT=str(port), REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    untold = stack_env(stack_dirs)  # neither PORT nor REDIS_URL: both come from what `up` recorded

    up = stack("up", told, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    assert http_status(f"{base}/health/ready") == 200
    assert redis_answers(redis_port)
    api_pid = recorded_pid(run_dir / "api.pid")
    redis_pid = recorded_pid(run_dir / f"redis-{redis_port}.pid")
    assert (run_dir / "api.env").stat().st_mode & 0o077 == 0  # REDIS_URL may hold a password

    status = stack("status", untold)
    assert status.returncode == 0, status.stderr
    assert f"api: running (pid {api_pid}) on {base}" in status.stdout
    assert f"redis: answering on 127.0.0.1:{redis_port}" in status.stdout
    assert f"redis: pid {redis_pid} on port {redis_port} started by" in status.stdout

    elsewhere = stack("up", {**untold, "PORT": str(free_port())})
    assert elsewhere.returncode != 0 and f"already running on {base}" in elsewhere.stderr
    assert pid_alive(api_pid)

    restarted = stack("restart-web", untold, timeout=120)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not pid_alive(api_pid)
    api_pid = recorded_pid(run_dir / "api.pid")
    assert http_status(f"{base}/health/ready") == 200

    down = stack("down", untold, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_until(lambda: http_status(f"{base}/health/live") == 0)
    assert wait_until(lambda: not redis_answers(redis_port))
    assert not pid_alive(api_pid) and not pid_alive(redis_pid)
    assert not list(run_dir.iterdir())

    again = stack("down", untold)
    assert again.returncode == 0, again.stderr
    assert "api not running" in again.stdout
