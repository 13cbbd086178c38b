"""deploy/: the manifests parse, run only aico's processes, set only documented settings, give task
workers the time to drain, and scale the task workers on the count aico's policy publishes."""

from __future__ import annotations

import functools
import math
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Settings the manifests may set beyond the README's table: the pm's pool mode, being added to it.
EXTRA_SETTINGS = {"AICO_POOL"}
DEFAULT_CLAUDE_TIMEOUT = 120.0
TRIES = 3  # one attempt is one call the anthropic SDK tries up to 3 times


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache
def documents() -> list[dict]:
    return [doc for path in yaml_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in documents() if doc["kind"] == kind]


def containers(workload: dict) -> list[dict]:
    pod = workload["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def argv(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def the(kind: str, name: str | None = None) -> dict:
    found = [doc for doc in of_kind(kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def task_deployment() -> dict:
    found = [
        d
        for d in of_kind("Deployment")
        if any(argv(c) == ["aico", "worker", "task"] for c in containers(d))
    ]
    assert len(found) == 1, "one Deployment runs `aico worker task`"
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {var["name"]: var for var in container.get("env", [])}


def procfile_commands() -> set[tuple[str, ...]]:
    commands = set()
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            commands.add(tuple(shlex.split(command)))
    return commands


def documented_settings() -> set[str]:
    """The backticked names in the README's "Configuration" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", section))


def config() -> dict[str, str]:
    return the("ConfigMap")["data"]


def test_every_yaml_file_parses_into_kubernetes_objects():
    files = yaml_files()
    assert KUBERNETES / "keda-scaledobject.yaml" in files
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, f"{path.name} holds no object"
        for doc in docs:
            assert isinstance(doc, dict), path.name
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name


def test_every_object_is_in_the_namespace_of_the_manifests():
    namespace = the("Namespace")["metadata"]["name"]
    for doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


def test_every_container_runs_a_procfile_process_or_task_workers():
    allowed = procfile_commands() | {("aico", "worker", "task")}
    workloads = of_kind("Deployment")
    assert workloads
    for workload in workloads:
        for container in containers(workload):
            name = workload["metadata"]["name"]
            assert tuple(argv(container)) in allowed, (name, argv(container))
    ran = {tuple(argv(c)) for w in workloads for c in containers(w)}
    assert ran == allowed, "every process of the Procfile, and the task workers, has a Deployment"


def test_only_documented_settings_are_set():
    allowed = documented_settings() | EXTRA_SETTINGS
    assert {"SLACK_BOT_TOKEN", "AICO_DB_URL", "AICO_MAX_WORKERS", "PORT"} <= allowed
    names = set(config())
    for secret in of_kind("Secret"):
        names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for workload in of_kind("Deployment"):
        for container in containers(workload):
            names |= set(env_of(container))
    assert names - allowed == set()


def test_references_to_the_config_and_the_secret_hold():
    configmap, secret = the("ConfigMap"), the("Secret")
    secret_keys = set(secret["stringData"])
    for workload in of_kind("Deployment"):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
            for name, var in env_of(container).items():
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"], name
                    assert ref["key"] in secret_keys, name


def test_the_secret_template_holds_placeholders_only():
    for key, value in the("Secret")["stringData"].items():
        assert re.search(r"<[a-z-]+>", value), f"{key} looks like a real value"


def test_each_process_gets_what_it_requires():
    required = {
        ("aico", "bot"): {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"},
        ("aico", "worker", "result"): {"SLACK_BOT_TOKEN"},
        ("aico", "pm"): {"SLACK_BOT_TOKEN", "ANTHROPIC_API_KEY", "AICO_POOL"},
        ("aico", "worker", "task"): {"ANTHROPIC_API_KEY"},
    }
    for workload in of_kind("Deployment"):
        for container in containers(workload):
            env = set(env_of(container))
            assert {"AICO_AMQP_URL", "AICO_DB_URL"} <= env
            assert required[tuple(argv(container))] <= env, workload["metadata"]["name"]


def test_task_workers_have_the_time_to_drain():
    timeout = float(config().get("AICO_CLAUDE_TIMEOUT", DEFAULT_CLAUDE_TIMEOUT))
    pod = task_deployment()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= TRIES * max(timeout, DEFAULT_CLAUDE_TIMEOUT)
    assert "replicas" not in task_deployment()["spec"], "the scaler owns the task workers' count"
    for container in pod["containers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_pm_runs_an_external_pool_with_a_standby():
    pm = next(d for d in of_kind("Deployment") if argv(containers(d)[0]) == ["aico", "pm"])
    assert pm["spec"]["replicas"] >= 2
    assert env_of(containers(pm)[0])["AICO_POOL"]["value"] == "external"


def test_one_result_worker_at_a_time():
    result = next(
        d for d in of_kind("Deployment") if argv(containers(d)[0]) == ["aico", "worker", "result"]
    )
    assert result["spec"]["replicas"] == 1
    assert result["spec"]["strategy"]["type"] == "Recreate"


def test_the_bot_serves_health_and_metrics_on_its_port():
    bot = next(d for d in of_kind("Deployment") if argv(containers(d)[0]) == ["aico", "bot"])
    container = containers(bot)[0]
    port = int(env_of(container)["PORT"]["value"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = bot["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    service = the("Service")
    assert service["spec"]["selector"] == bot["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == port


def test_keda_follows_the_desired_worker_count():
    scaled = the("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == task_deployment()["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "aico_workers_desired" in trigger["metadata"]["query"]
    # replicas = ceil(metric / threshold): the desired count itself
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    assert math.isclose(float(trigger["metadata"]["threshold"]), 1.0)
    assert scaled["spec"]["minReplicaCount"] == int(config()["AICO_MIN_WORKERS"])
    assert scaled["spec"]["maxReplicaCount"] == int(config()["AICO_MAX_WORKERS"])


def test_the_hpa_alternative_follows_the_same_count():
    hpa = the("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == task_deployment()["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "aico_workers_desired"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert hpa["spec"]["minReplicas"] == int(config()["AICO_MIN_WORKERS"])
    assert hpa["spec"]["maxReplicas"] == int(config()["AICO_MAX_WORKERS"])


def test_what_must_not_be_applied_with_the_folder_is_in_a_subfolder():
    """`kubectl apply -f deploy/kubernetes/` is not recursive: the Secret's placeholders never
    overwrite the real one, and the HPA alternative never joins KEDA's."""
    top = [p for p in yaml_files() if p.parent == KUBERNETES]
    kinds = {doc["kind"] for p in top for doc in yaml.safe_load_all(p.read_text()) if doc}
    assert "ScaledObject" in kinds
    assert not kinds & {"Secret", "HorizontalPodAutoscaler"}
