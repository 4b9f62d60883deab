"""deploy/kubernetes/: the base and every overlay rendered, validated and cross-checked.

No cluster runs in CI, so what is checked is: each overlay rendered the way
kustomize renders it (by the small renderer below, itself compared with
`kubectl kustomize`), every core object validated offline against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail),
the custom resources (ServiceMonitor, ScaledObject) checked field by field, and
the objects against each other and against the app: probes on routes that
answer, metrics the autoscalers use exported by /metrics, environment variables
that are settings, a grace period longer than the drain.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from magnet.server.settings import Settings
from magnet.server.testing import app_with, running_app

from test_deploy_files import exported_names

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["cpu", "gpu", "gpu-keda"]
CORE_KINDS = {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
# the oldest Kubernetes the manifests claim (autoscaling/v2, policy/v1 and all) and the newest schemas shipped
VERSIONS = ["1.29", kubernetes_validate.latest_version()]


# ---- a kustomize subset: resources, components, strategic-merge patches, images, namespace ----

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base, patch, key: str | None = None):
    """Strategic merge: maps merge, lists of named items merge by their key, the rest is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for field, value in patch.items():
            merged[field] = merge(base[field], value, field) if field in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        name = MERGE_KEYS[key]
        patched = {item[name]: item for item in patch}
        kept = [merge(item, patched.pop(item[name]), None) if item[name] in patched else item for item in base]
        return list(patched.values()) + kept
    return patch


def identity(resource: dict) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def apply_patch(resources: list[dict], patch: dict) -> list[dict]:
    target = identity(patch)
    assert target in {identity(r) for r in resources}, f"patch for missing {target}"
    if patch.get("$patch") == "delete":
        return [r for r in resources if identity(r) != target]
    return [merge(r, patch) if identity(r) == target else r for r in resources]


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += render(path) if path.is_dir() else documents(path)
    for component in kustomization.get("components", []):
        layer = yaml.safe_load((directory / component / "kustomization.yaml").read_text())
        assert layer["kind"] == "Component"
        for entry in layer.get("resources", []):
            resources += documents(directory / component / entry)
        resources = apply_patches(resources, layer, directory / component)
    resources = apply_patches(resources, kustomization, directory)
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in kustomization:
        for resource in resources:
            resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def apply_patches(resources: list[dict], kustomization: dict, directory: Path) -> list[dict]:
    for entry in kustomization.get("patches", []):
        patch = yaml.safe_load(entry["patch"]) if "patch" in entry else documents(directory / entry["path"])[0]
        if "target" in entry:
            assert (entry["target"]["kind"], entry["target"]["name"]) == identity(patch)
        resources = apply_patch(resources, patch)
    return resources


def by_kind(resources: list[dict]) -> dict[str, dict]:
    """The one object of each kind (the PVCs, of which there may be two, left out)."""
    kinds = [r["kind"] for r in resources if r["kind"] != "PersistentVolumeClaim"]
    assert len(kinds) == len(set(kinds)), kinds
    return {r["kind"]: r for r in resources if r["kind"] != "PersistentVolumeClaim"}


def rendered(overlay: str) -> list[dict]:
    return render(K8S / "overlays" / overlay)


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def environment(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"]}


# ---- the renderer is kustomize's rendering ----------------------------------------------------


def canonical(value):
    """Named list items sorted by name (kustomize orders merged lists its own way)."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        for key in ("name", "mountPath"):
            if items and all(isinstance(i, dict) and key in i for i in items):
                return sorted(items, key=lambda i: i[key])
        return items
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: install it with `apt-get install -y kubernetes-client` (Debian's "
                    "package); this test compares the renderer with `kubectl kustomize`")
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    theirs = {identity(r): canonical(r) for r in yaml.safe_load_all(result.stdout) if r}
    ours = {identity(r): canonical(r) for r in rendered(overlay)}
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], key


# ---- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
@pytest.mark.parametrize("version", VERSIONS)
def test_core_objects_are_valid_kubernetes(overlay, version):
    resources = render(K8S / "base") if overlay == "base" else rendered(overlay)
    core = [r for r in resources if r["kind"] in CORE_KINDS]
    expected = CORE_KINDS - ({"HorizontalPodAutoscaler"} if overlay == "gpu-keda" else set())
    assert {r["kind"] for r in core} == expected
    for resource in core:
        kubernetes_validate.validate(resource, version, strict=True)  # raises ValidationError


def test_the_validator_rejects_a_broken_deployment():
    deployment = by_kind(rendered("cpu"))["Deployment"]
    container(deployment)["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_service_monitor_selects_the_service_and_scrapes_metrics():
    objects = by_kind(render(K8S / "base"))
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["name"]
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels and labels.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"


def test_keda_replaces_the_hpa_and_queries_this_namespace():
    objects = by_kind(rendered("gpu-keda"))
    scaled = objects["ScaledObject"]
    assert "HorizontalPodAutoscaler" not in objects  # KEDA makes its own; two would fight
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", objects["Deployment"]["metadata"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
    assert trigger["metadata"]["serverAddress"].startswith("http")
    query = trigger["metadata"]["query"]
    assert f'namespace="{scaled["metadata"]["namespace"]}"' in query
    assert f'service="{objects["Service"]["metadata"]["name"]}"' in query


# ---- the objects agree with each other --------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_names_and_volumes_line_up(overlay):
    resources = rendered(overlay)
    objects = by_kind(resources)
    deployment, service, budget = objects["Deployment"], objects["Service"], objects["PodDisruptionBudget"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    if overlay != "gpu-keda":
        target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    claims = {r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v} == claims
    assert {m["name"] for m in container(deployment)["volumeMounts"]} == set(volumes)
    port = container(deployment)["ports"][0]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert {r["metadata"]["namespace"] for r in resources} == {"magnet"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_environment_is_settings_and_the_api_key_comes_from_the_secret(overlay, monkeypatch):
    deployment = by_kind(rendered(overlay))["Deployment"]
    env = environment(deployment)
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert env["MAGNET_CACHE_DIR"] in mounts and "persistentVolumeClaim" in volumes[mounts[env["MAGNET_CACHE_DIR"]]]
    assert "MAGNET_API_KEY" not in env
    key_dir, _, key_file = env["MAGNET_API_KEY_FILE"].rpartition("/")
    secret = volumes[mounts[key_dir]]["secret"]
    assert secret["secretName"] and key_file in {item["path"] for item in secret["items"]}
    settings_env = {k: v for k, v in env.items() if k != "MAGNET_CACHE_DIR"}  # read by magnet.embedded
    unknown = {k for k in settings_env if k.removeprefix("MAGNET_").lower() not in Settings.model_fields}
    assert not unknown, f"not settings: {unknown}"
    for name in Settings.model_fields:
        monkeypatch.delenv(f"MAGNET_{name.upper()}", raising=False)
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the values parse
    assert settings.port == container(deployment)["ports"][0]["containerPort"] and settings.host == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_pre_stop_sleep_and_the_drain(overlay):
    deployment = by_kind(rendered(overlay))["Deployment"]
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(environment(deployment)["MAGNET_GRACEFUL_SHUTDOWN_S"])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(command[1]) + drain
    startup = container(deployment)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a first conversion / merge


def test_the_gpu_overlay_asks_for_gpus_and_the_cpu_one_does_not():
    gpu = container(by_kind(rendered("gpu"))["Deployment"])
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = environment(by_kind(rendered("gpu"))["Deployment"])
    assert env["MAGNET_DEVICE"] == "cuda" and env["MAGNET_GENERATE_BACKEND"] == "vllm"
    assert int(env["MAGNET_VLLM_TENSOR_PARALLEL_SIZE"]) == int(gpu["resources"]["limits"]["nvidia.com/gpu"])
    cpu = container(by_kind(rendered("cpu"))["Deployment"])
    assert not any("nvidia.com/gpu" in cpu["resources"][k] for k in ("requests", "limits"))
    assert cpu["image"].endswith(":cpu") and gpu["image"].endswith(":gpu")


# ---- the objects agree with the app ----------------------------------------------------------


def probe_paths(deployment: dict) -> set[str]:
    c = container(deployment)
    return {c[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}


async def test_the_probes_are_routes_that_answer_once_ready(tiny_engine):
    deployment = by_kind(rendered("cpu"))["Deployment"]
    c = container(deployment)
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/ready"
    ports = {p["name"] for p in c["ports"]}
    assert all(c[p]["httpGet"]["port"] in ports for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    app = app_with(tiny_engine, api_key="k")
    async with running_app(app) as http:
        for path in probe_paths(deployment) | {"/metrics"}:  # open without the API key, as a kubelet calls
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/v1/models")).status_code == 401  # the key is on


def autoscaling_metric_names() -> dict[str, set[str]]:
    hpa = by_kind(render(K8S / "base"))["HorizontalPodAutoscaler"]
    adapter = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    keda = by_kind(rendered("gpu-keda"))["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    names = lambda text: set(re.findall(r"\bmagnet_[a-z_]+", text))  # noqa: E731
    return {
        "hpa": {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]},
        "adapter series": names(rule["seriesQuery"]),
        "adapter serves": {rule["name"]["as"]},
        "keda": names(keda),
    }


async def test_the_autoscalers_use_series_the_server_exports(tiny_engine):
    used = autoscaling_metric_names()
    assert used["hpa"] == used["adapter serves"] == used["adapter series"] == used["keda"] == {"magnet_queue_depth"}
    adapter = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert re.fullmatch(rule["name"]["matches"], "magnet_queue_depth")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # labels the ServiceMonitor's scrape adds
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
    app = app_with(tiny_engine)
    async with running_app(app) as http:
        exported = exported_names((await http.get("/metrics")).text)
    assert set().union(*used.values()) <= exported
