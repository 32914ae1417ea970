"""docker/kubernetes: the kustomize base and the example overlay, rendered by `kubectl kustomize`
(CI: Debian's kubectl 1.20 with kustomize v2.0.3, which `.ci/run` installs), every object
validated against the Kubernetes schemas (`kubernetes-validate`, strict: no unknown field), and
the properties a deployment relies on checked on what is rendered.

No cluster is needed.  Without kubectl the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import ValidationError, latest_version, validate
from kubernetes_validate.utils import all_versions

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "docker" / "kubernetes"
SECRETS_DIR = "/run/secrets/callpush"
SECRET_NAME = "callpush-secrets"
WORKLOAD_KINDS = ("Deployment", "Job")


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl is not installed (Debian package kubernetes-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return kubectl


def _render(directory: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(KUBERNETES / directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/example", "overlays/example-keda"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _one(objects: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"one {kind} for {component}, found {len(found)}"
    return found[0]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def _config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(maps) == 1
    return maps[0]


# The oldest Kubernetes kubernetes-validate has schemas for, and the newest.
OLDEST = min(all_versions(), key=lambda version: tuple(int(n) for n in version.split(".")))


@pytest.mark.parametrize("version", sorted({OLDEST, latest_version()}))
def test_every_object_is_valid(rendered: list[dict[str, Any]], version: str) -> None:
    kinds = set()
    for obj in rendered:
        if obj["apiVersion"].startswith("keda.sh/"):
            # A CRD: kubernetes-validate has only the built-in kinds' schemas, so KEDA's
            # objects are checked by test_keda_scales_the_bulk_workers alone.
            continue
        # strict: a misspelt or misplaced field is an error, not silently dropped by the server.
        try:
            validate(obj, version, strict=True)
        except ValidationError as error:  # its str() prints the whole schema
            path = "/".join(str(part) for part in error.absolute_path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {path}: {error.message}")
        kinds.add(obj["kind"])
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Job",
        "PodDisruptionBudget",
        "ConfigMap",
    } <= kinds


def test_web(rendered: list[dict[str, Any]]) -> None:
    web = _one(rendered, "Deployment", "web")
    container = _container(web)
    assert container["args"] == ["web", "--bind", "0.0.0.0:8080"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "replicas" not in web["spec"], "the autoscaler owns the web replica count"

    service = _one(rendered, "Service", "web")
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    autoscaler = _one(rendered, "HorizontalPodAutoscaler", "web")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": web["metadata"]["name"],
    }
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]


@pytest.mark.parametrize("queue", ["ring", "bulk"])
def test_workers_serve_one_queue_and_are_checked_by_the_image(
    rendered: list[dict[str, Any]], queue: str
) -> None:
    container = _container(_one(rendered, "Deployment", f"worker-{queue}"))
    args = container["args"]
    assert args[0] == "worker"
    assert args[args.index("--queues") + 1] == queue
    # Prefork would otherwise start one process per core of the node.
    assert int(args[args.index("--concurrency") + 1]) > 0
    # The same check compose runs (docker/compose.yaml: callpush-healthcheck worker <queue>).
    assert container["livenessProbe"]["exec"]["command"] == [
        "callpush-healthcheck",
        "worker",
        queue,
    ]
    # The check pings through the broker with a 5 s timeout: the probe must wait longer.
    assert container["livenessProbe"]["timeoutSeconds"] > 5


def test_exactly_one_beat(rendered: list[dict[str, Any]]) -> None:
    beats = [o for o in _workloads(rendered) if _container(o).get("args", [None])[0] == "beat"]
    assert len(beats) == 1
    beat = beats[0]
    assert beat["kind"] == "Deployment"
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    name = beat["metadata"]["name"]
    assert not [
        o
        for o in rendered
        if o["kind"] == "HorizontalPodAutoscaler" and o["spec"]["scaleTargetRef"]["name"] == name
    ]
    # Celery beat writes its schedule file in the working directory: a writable volume there.
    container = _container(beat)
    assert container["livenessProbe"]["exec"]["command"] == ["callpush-healthcheck", "beat"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert container["workingDir"] in mounts
    volumes = {v["name"]: v for v in _pod_spec(beat)["volumes"]}
    assert "emptyDir" in volumes[mounts[container["workingDir"]]]


def test_migration_is_a_job(rendered: list[dict[str, Any]]) -> None:
    job = _one(rendered, "Job", "migrate")
    assert _container(job)["args"] == ["db", "upgrade"]
    assert _pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert not [
        o for o in _workloads(rendered) if o is not job and "db" in _container(o).get("args", [])
    ]


def test_disruption_budgets_cover_web_and_workers(rendered: list[dict[str, Any]]) -> None:
    for component in ("web", "worker-ring", "worker-bulk"):
        budget = _one(rendered, "PodDisruptionBudget", component)
        deployment = _one(rendered, "Deployment", component)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), component
        assert selector == deployment["spec"]["selector"]["matchLabels"], component


def test_every_pod_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    workloads = _workloads(rendered)
    assert len(workloads) == 5
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = {**pod["securityContext"], **container.get("securityContext", {})}
            assert context["runAsNonRoot"] is True, name
            # The image's numeric user (docker/Dockerfile: USER 10001:10001).
            assert context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{name}: {bound}"
            # A read-only root: /tmp (gunicorn, Prometheus multiprocess files) is a volume.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_secrets_are_mounted_files(rendered: list[dict[str, Any]]) -> None:
    config = _config(rendered)
    for workload in _workloads(rendered):
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        container = _container(workload)
        # Settings come from the ConfigMap; nothing from a Secret reaches the environment.
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        for variable in container.get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), f"{name}: {variable}"
        secret_volumes = [v for v in pod["volumes"] if "secret" in v]
        assert [v["secret"]["secretName"] for v in secret_volumes] == [SECRET_NAME], name
        # Readable by the owner and the pod's group only (fsGroup).
        assert secret_volumes[0]["secret"]["defaultMode"] & 0o007 == 0, name
        mounts = [m for m in container["volumeMounts"] if m["name"] == secret_volumes[0]["name"]]
        assert mounts == [
            {"name": secret_volumes[0]["name"], "mountPath": SECRETS_DIR, "readOnly": True}
        ], name


def test_the_settings_name_the_secret_files_as_compose_does(
    rendered: list[dict[str, Any]],
) -> None:
    data = _config(rendered)["data"]
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    compose_env = compose["services"]["web"]["environment"]
    by_file = {k for k in compose_env if k.endswith("_FILE") or k == "CALLPUSH_CONFIG"}
    expected = by_file | {"CALLPUSH_BROKER_PASSWORD_FILE", "CALLPUSH_ADMIN_TOKEN_FILE"}
    assert expected <= set(data)
    for key in expected:
        # The same file name as compose's secret where compose has one.
        assert data[key].startswith(SECRETS_DIR + "/"), key
        if key in compose_env:
            assert Path(data[key]).name == Path(compose_env[key]).name, key


def test_no_secret_value_in_any_manifest(rendered: list[dict[str, Any]]) -> None:
    # The Secret is created by the operator (docker/kubernetes/README.md), never rendered here.
    assert not [o for o in rendered if o["kind"] == "Secret"]
    for key, value in _config(rendered)["data"].items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY$", key):
            assert key.endswith("_FILE") or key.endswith("_KEY_ID"), key
        assert not re.search(r"://[^/@]*:[^/@]*@", value), f"{key}: a URL with a password"
    text = yaml.safe_dump_all(rendered)
    for marker in ("PRIVATE KEY", "api_secret", "private_key", "client_secret"):
        assert marker not in text


def test_overlay_sets_image_and_namespace() -> None:
    objects = _render("overlays/example")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "callpush", obj["metadata"]["name"]
    images = {c["image"] for w in _workloads(objects) for c in _pod_spec(w)["containers"]}
    assert images == {"registry.example.com/callpush:0.1.0"}
    assert _one(objects, "Deployment", "worker-ring")["spec"]["replicas"] == 3
    # The overlay's settings are merged into the base's, not put in place of them.
    data = _config(objects)["data"]
    assert data["CALLPUSH_APNS__KEY_ID"] == "ABC123DEFG"
    assert data["CALLPUSH_CONFIG"] == f"{SECRETS_DIR}/stream_apps.toml"


def test_keda_scales_the_bulk_workers() -> None:
    objects = _render("overlays/example-keda")
    scaled = _one(objects, "ScaledObject", "worker-bulk")
    bulk = _one(objects, "Deployment", "worker-bulk")
    assert scaled["metadata"]["namespace"] == bulk["metadata"]["namespace"] == "callpush"
    assert scaled["spec"]["scaleTargetRef"] == {"name": bulk["metadata"]["name"]}
    [trigger] = scaled["spec"]["triggers"]
    # Celery on Redis: the queue is the Redis list named after it.
    args = _container(bulk)["args"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == args[args.index("--queues") + 1]
    assert "password" not in trigger["metadata"]
    [auth] = [o for o in objects if o["kind"] == "TriggerAuthentication"]
    assert auth["metadata"]["name"] == trigger["authenticationRef"]["name"]
    assert auth["metadata"]["namespace"] == "callpush"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": SECRET_NAME, "key": "broker_password"}
    ]
    # Ring workers are not scaled on queue depth: a ring cannot wait for a pod to start.
    assert not [o for o in objects if o["kind"] == "ScaledObject" and o is not scaled]
