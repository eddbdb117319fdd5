"""Structure of the deployment files (no Docker engine or cluster on these machines, so the
manifests are checked as data: what kubelet and the sidecar would read from them)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from conduit_sidecar.config import SidecarConfig, env_name, load_config
from conduit_sidecar.models import load_catalogue
from conduit_sidecar.server import SERVICE_NAME

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
WORKLOADS = ("app-with-sidecar.yaml", "redis-multi-replica.yaml")
SETTING_VARIABLES = {env_name(f.name) for f in dataclasses.fields(SidecarConfig)}


def documents(name: str) -> list[dict[str, Any]]:
    with open(KUBE / name, encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def workload(name: str) -> dict[str, Any]:
    (deployment,) = [d for d in documents(name) if d["kind"] == "Deployment"]
    return deployment


def sidecar(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"]]
    return container


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_every_manifest_parses_with_kind_and_name() -> None:
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in documents(path.name):
            assert doc.get("apiVersion") and doc.get("kind"), path.name
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path.name


def test_kustomization_lists_existing_files() -> None:
    (kustomization,) = documents("kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (KUBE / resource).is_file(), resource


@pytest.mark.parametrize("name", WORKLOADS)
def test_conduit_is_a_native_sidecar_with_grpc_probes(name: str) -> None:
    deployment = workload(name)
    pod = deployment["spec"]["template"]["spec"]
    container = sidecar(deployment)
    assert container["name"] == "conduit"
    assert container["restartPolicy"] == "Always"  # what makes an init container a sidecar
    assert [c["name"] for c in pod["containers"]] == ["app"]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    listen = env(container)["CONDUIT_LISTEN"]
    assert listen.endswith(f":{grpc_port}") and listen.startswith("0.0.0.0")  # probes use pod IP
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    # Readiness asks for the Conduit service itself, so it flips on SIGTERM (NOT_SERVING).
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    for c in (container, pod["containers"][0]):
        assert set(c["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's uid
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The sidecar drains within CONDUIT_GRACE_S (default 10 s), inside the pod's grace period.
    grace_s = float(env(container).get("CONDUIT_GRACE_S", 10))
    assert grace_s < pod["terminationGracePeriodSeconds"]
    app_env = env(pod["containers"][0])
    assert app_env["CONDUIT_TARGET"] == f"127.0.0.1:{grpc_port}"
    assert app_env["CONDUIT_TOKEN"] == env(container)["CONDUIT_TOKEN"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_sidecar_env_is_a_valid_config(name: str, tmp_path: Path) -> None:
    container = sidecar(workload(name))
    values = {k: v for k, v in env(container).items() if isinstance(v, str)}
    # The catalogue path is a mounted ConfigMap; point it at a local copy of the same file.
    (configmap,) = documents("catalogue-configmap.yaml")
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(configmap["data"]["models.yaml"])
    values["CONDUIT_CATALOGUE"] = str(catalogue)
    values["CONDUIT_TOKEN"] = "secret-from-the-cluster"
    config = load_config(env=values)
    assert config.listen == "0.0.0.0:50051"
    # load_config ignores variables that name no setting: a misspelt one would be dropped
    # without a word, so every CONDUIT_* variable here must be a setting's.
    assert set(values) <= SETTING_VARIABLES, set(values) - SETTING_VARIABLES
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert values["CONDUIT_CATALOGUE"] and mounts["catalogue"] == "/etc/conduit"


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV settings (`ENV A=1 \\` continued over several lines)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[len("ENV ") :]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_env_is_a_valid_config() -> None:
    values = {k: v for k, v in dockerfile_env().items() if k.startswith("CONDUIT_")}
    assert set(values) <= SETTING_VARIABLES, set(values) - SETTING_VARIABLES
    config = load_config(env=values)
    assert config.listen == "0.0.0.0:50051"  # kubelet's probes connect to the pod IP
    assert config.store_url == "sqlite:////var/lib/conduit/conduit.db"
    assert config.metrics_port == 9464 and config.json_logs
    text = (ROOT / "Dockerfile").read_text()
    assert 'VOLUME ["/var/lib/conduit"]' in text and "EXPOSE 50051 9464" in text


def test_catalogue_configmap_is_a_loadable_catalogue(tmp_path: Path) -> None:
    (configmap,) = documents("catalogue-configmap.yaml")
    path = tmp_path / "models.yaml"
    path.write_text(configmap["data"]["models.yaml"])
    models = load_catalogue(path)
    assert len(models) >= 2 and all(m.input_usd_per_mtok > 0 for m in models)
    for name in WORKLOADS:
        volumes = workload(name)["spec"]["template"]["spec"]["volumes"]
        names = [v["configMap"]["name"] for v in volumes if "configMap" in v]
        assert names == [configmap["metadata"]["name"]]


def test_single_replica_uses_sqlite_on_a_volume() -> None:
    deployment = workload("app-with-sidecar.yaml")
    container = sidecar(deployment)
    assert deployment["spec"]["replicas"] == 1
    url = env(container)["CONDUIT_STORE_URL"]
    assert url.startswith("sqlite:////var/lib/conduit/")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/conduit" in mounts


def test_redis_variant_shares_one_redis_between_replicas() -> None:
    docs = documents("redis-multi-replica.yaml")
    deployment = workload("redis-multi-replica.yaml")
    assert deployment["spec"]["replicas"] > 1
    url = env(sidecar(deployment))["CONDUIT_STORE_URL"]
    assert url.startswith("redis://")
    host_port = url[len("redis://") :].split("/", 1)[0]
    host, port = host_port.split(":")
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["metadata"]["name"] == host
    assert service["spec"]["ports"][0]["port"] == int(port)
    (redis,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert redis["spec"]["template"]["metadata"]["labels"] == service["spec"]["selector"]


def test_dockerfile_is_multi_stage_non_root_and_serves() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in stages[0]
    assert "maturin build --release" in text
    assert "COPY --from=build" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["conduit-sidecar"]' in text and 'CMD ["serve"]' in text
    assert "STOPSIGNAL SIGTERM" in text
