"""ft doctor: real checks against real (and dead) servers; a failure names what to fix."""

from __future__ import annotations

import pytest

from flows.cli import main
from ftcore.doctor import diagnose
from tests.helpers import free_port, small_config


def _by_check(findings):
    return {f.check: f for f in findings}


def test_dead_servers_fail_with_a_fix(monkeypatch, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PREFECT_API_URL", dead + "/api")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    found = _by_check(diagnose(timeout=2))
    assert found["prefect api"].level == "fail" and "PREFECT_API_URL" in found["prefect api"].fix
    assert found["mlflow"].level == "fail" and "mlflow server" in found["mlflow"].fix
    assert found["torch"].level == "ok" and found["transformers"].level == "ok"
    assert main(["doctor", "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] prefect api" in out and "failed" in out


@pytest.mark.slow
def test_live_mlflow_server_and_config_pass(mlflow_server, tmp_path, monkeypatch):
    url, _ = mlflow_server
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = small_config(tmp_path, registry={"tracking_uri": url})
    found = _by_check(diagnose(cfg, timeout=5))
    assert found["mlflow"].level == "ok", found["mlflow"]
    assert all(f.level != "fail" for f in found.values()), [f.line() for f in found.values()]


@pytest.mark.parametrize("name", ["vllm", "llmcompressor", "gptqmodel"])
def test_missing_side_env_says_how_to_install(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_VENVS", str(tmp_path / "none"))
    found = _by_check(diagnose(timeout=1))
    assert found[f"venv {name}"].level == "warn"
    assert found[f"venv {name}"].fix == f"ft env install {name}"
