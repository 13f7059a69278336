"""The manifests of deploy/k8s agree with the app: the API's Deployment, Service, Ingress (TLS), secrets, autoscaling,
the worker's Deployment and its optional KEDA scaler."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from fastapi import FastAPI

from app.settings import ENVIRONMENT_FIELDS
from tests.system.deploy.common import (
    APP_PORT,
    K8S,
    check_metrics_probe,
    dockerfile_env,
    final_stage,
    instructions,
    load_yaml,
    metrics_probe_code,
    model_cache_dir,
    serves,
    setting_default,
    setting_names,
    shutdown_seconds,
    worker_shutdown_seconds,
    writable,
)

WORKER_DEPLOYMENT = K8S / "worker-deployment.yaml"
KEDA = K8S / "keda-scaledobject.yaml"  # optional (KEDA's CRDs): not in kustomization.yaml


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


def test_key_pepper_is_a_required_secret_and_the_tokens_optional_ones(
    k8s: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    pepper = env_entry(container, "API_KEY_PEPPER")["valueFrom"]["secretKeyRef"]
    assert pepper["name"] == k8s["Secret"]["metadata"]["name"] and pepper["key"] in k8s["Secret"]["stringData"]
    assert not pepper.get("optional"), "production refuses to start without it: a missing Secret key must show"
    for name in ("ADMIN_TOKEN", "METRICS_TOKEN"):
        assert name in ENVIRONMENT_FIELDS
        ref = env_entry(container, name)["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True and ref["key"] in k8s["Secret"]["stringData"]


def test_no_secret_sits_in_plain_config(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    config = k8s.get("ConfigMap", {}).get("data", {})
    for name in ("REDIS_URL", "CLOUDINARY_URL", "API_KEY_PEPPER", "ADMIN_TOKEN", "METRICS_TOKEN"):
        assert name not in config
        assert "value" not in env_entry(container, name)


def test_secret_example_holds_placeholders_only(k8s: dict[str, dict[str, Any]]) -> None:
    values = k8s["Secret"]["stringData"].values()
    assert values and all("CHANGE_ME" in value for value in values)


def test_configmap_keys_are_settings(k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    fields = setting_names()
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


NGINX_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def test_ingress_serves_the_service_over_tls_only(k8s: dict[str, dict[str, Any]]) -> None:
    ingress = k8s["Ingress"]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] and tls["hosts"]
    service = k8s["Service"]
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls["hosts"]  # no host served without its certificate
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"


def test_ingress_passes_what_the_api_accepts(k8s: dict[str, dict[str, Any]]) -> None:
    annotations = k8s["Ingress"]["metadata"]["annotations"]
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(size[:-1]) * NGINX_SIZE_UNITS[size[-1].lower()] >= setting_default("job_request_max_bytes")
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > setting_default("stream_idle_seconds")


def test_the_api_believes_forwarded_headers_from_the_ingress_controller_only(k8s: dict[str, dict[str, Any]]) -> None:
    data = k8s["ConfigMap"]["data"]
    networks = [ipaddress.ip_network(entry.strip()) for entry in data["TRUSTED_PROXIES"].split(",")]
    assert networks and all(network.is_private for network in networks)  # the cluster's pods, never the internet
    assert data["CLIENT_ADDRESS_HEADER"].lower() == "x-forwarded-for"


def test_kustomization_applies_everything_but_the_secret_example_and_keda() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    assert "secret.example.yaml" not in resources
    assert KEDA.name not in resources  # KEDA's CRDs may be absent: applied apart
    assert WORKER_DEPLOYMENT.name in resources
    assert resources == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml", KEDA.name}


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
    # That `hazard-worker` runs app.entrypoints.worker is tests/system/test_package.py's.
    assert worker_container["command"] == ["hazard-worker"] and "args" not in worker_container
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
