"""ft deploy / ft trigger checks that need no server: parameters, paths, clear errors first.
(tests/test_stack_postgres.py deploys, schedules and triggers against real servers.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from flows.deploy import deployable_config, flow_parameters
from ftcore.config import load_config
from ftcore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_deployed_config_has_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [f"workdir={tmp_path / 'w'}"])
    params = deployable_config(cfg)
    assert params["data"]["dataset_dir"] == str(REPO / "data")
    assert params["workdir"] == str(tmp_path / "w")
    assert load_config(params).data.dataset_dir == str(REPO / "data")  # what the worker reads back
    monkeypatch.chdir(tmp_path)  # elsewhere, `data` resolves to nothing: refused at deploy time
    with pytest.raises(ConfigError, match=r"data\.dataset_dir"):
        deployable_config(load_config(REPO / "configs" / "quickstart.yaml"))


def test_serve_flow_follows_the_registry_alias(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [f"workdir={tmp_path}"])
    params = flow_parameters("serve", cfg)
    assert params["target"] == "models:/ftflow-quickstart@champion"
    assert params["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "api_key" not in str(params)  # never a parameter: parameters show in the UI


def test_no_prefect_server_is_a_clear_error(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # whatever an earlier test configured
        assert main(["deploy", str(REPO / "configs" / "quickstart.yaml")]) == 2
        assert "PREFECT_API_URL" in capsys.readouterr().err
        assert main(["trigger", "finetune/nightly"]) == 2
        assert "Prefect server" in capsys.readouterr().err
    assert main(["deploy", str(REPO / "configs" / "quickstart.yaml"), "--flow", "nope"]) == 2
    assert "not a deployable flow" in capsys.readouterr().err
