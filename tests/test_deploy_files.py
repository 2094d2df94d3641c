"""deploy/ and prefect.yaml agree with each other and with the README (they cannot be started here:
no Docker or Kubernetes on this machine; tests/test_stack_postgres.py runs compose's commands)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SERVICES = {"postgres": 5432, "prefect-server": 4200, "mlflow": 5000, "worker": None, "vllm": 8000}
CLIENT_ENV = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "FTFLOW_HOME", "HF_HOME")


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())


def _k8s() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "ftflow.yaml").read_text()) if doc]


def _k8s_containers() -> dict[str, dict]:
    found = {}
    for doc in _k8s():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            found[doc["metadata"]["name"]] = container
    return found


def _normalize(arg: str) -> str:
    """compose writes ${POSTGRES_PASSWORD:-ftflow}, Kubernetes $(POSTGRES_PASSWORD): the same value."""
    return arg.replace("${POSTGRES_PASSWORD:-ftflow}", "$(POSTGRES_PASSWORD)")


def test_compose_services_ports_and_volumes():
    compose = _compose()
    services = compose["services"]
    assert set(services) == set(SERVICES)
    for name, port in SERVICES.items():
        if port is not None and name != "postgres":
            assert services[name]["ports"] == [f"127.0.0.1:{port}:{port}"], name  # never beyond localhost
    declared = set(compose["volumes"])
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in declared, volume
    worker = services["worker"]["environment"]
    for key in CLIENT_ENV:
        assert key in worker
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "FTFLOW_API_KEY" in services["vllm"]["environment"]  # reachable beyond localhost: a key


def test_k8s_manifests_match_compose():
    compose = _compose()["services"]
    containers = _k8s_containers()
    assert set(containers) == set(SERVICES)
    services = {d["metadata"]["name"]: d for d in _k8s() if d["kind"] == "Service"}
    for name, port in SERVICES.items():
        if port is None:
            assert name not in services
            continue
        assert services[name]["spec"]["ports"][0]["port"] == port
        assert services[name]["spec"].get("type", "ClusterIP") == "ClusterIP"  # inside the cluster only
    for name in ("prefect-server", "mlflow", "worker", "vllm"):
        in_compose = [_normalize(str(a)) for a in compose[name]["command"]]
        in_k8s = [str(a) for a in containers[name]["command"]]
        # the same commands; allowed hosts may name the cluster's service DNS too
        strip = lambda argv: [a for a in argv if "5000," not in a]  # noqa: E731
        assert strip(in_k8s) == strip(in_compose), name
    worker_env = {e["name"]: e.get("value") for e in containers["worker"]["env"]}
    for key in CLIENT_ENV:
        assert worker_env[key] == str(compose["worker"]["environment"][key]), key
    prefect_env = {e["name"]: e.get("value") for e in containers["prefect-server"]["env"]}
    assert (
        _normalize(compose["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
        == (prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"])
    )
    init = next(d for d in _k8s() if d["kind"] == "ConfigMap")["data"]["01-databases.sql"]
    assert (
        init.split()
        == (DEPLOY / "docker" / "initdb" / "01-databases.sql").read_text().split("\n", 2)[2].split()
    )


def test_readme_names_every_service_and_port():
    readme = (DEPLOY / "README.md").read_text()
    for name, port in SERVICES.items():
        assert f"| {name} |" in readme
        if port is not None:
            assert re.search(rf"\| {re.escape(name)} \|[^\n]*\| {port} \|", readme), name


def test_prefect_yaml_deployments_load():
    from ftcore.config import load_config

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    assert len(names) == len(set(names))
    for deployment in spec["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        assert re.search(rf"^def {func}\(", (REPO / path).read_text(), re.M), deployment["entrypoint"]
        params = deployment["parameters"]
        load_config(REPO / params["config"], params.get("overrides"))  # the config and overrides are valid
        assert deployment["work_pool"]["name"] == "ftflow-process"
        assert deployment["concurrency_limit"]["limit"] == 1
