"""The board's form is the config schema: every field reachable, YAML -> form -> YAML identical, bad
values named by field with the schema's message, the Chinese table naming only real fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("gradio")

from ftcore.config import PipelineConfig, dump_config, load_config
from webui import i18n
from webui.cli import credentials
from webui.schema import FieldSpec, FormErrors, config_to_values, fields, from_form, to_form, values_to_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "jobs" not in yaml.safe_load(p.read_text()))


def _leaves(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Leaf paths of a dumped config, found without the form's own walk."""
    out: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and key != "fsdp_config":
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_field_of_the_schema_has_a_form_field() -> None:
    assert {s.path for s in fields()} == _leaves(PipelineConfig().model_dump(exclude={"base_dir"}))
    assert all(s.description for s in fields()), "every field is described (the help text)"


def test_every_field_is_a_component_of_the_board() -> None:
    from webui.app import build

    demo = build()
    form = demo.ftflow_form
    assert set(form.paths) == {s.path for s in fields()}
    fields_ids = {id(c) for c in form.inputs}
    for handler in demo.fns.values():  # a handler that reads the form reads all of it
        used = {id(c) for c in handler.inputs} & fields_ids
        if len(used) > 3:  # (the method / stage switches read two fields)
            assert used == fields_ids, handler.name
    assert form.components["train.stage"].choices[0][0] == "sft"  # choices from the Literal


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_yaml_form_yaml_round_trip_is_identical(path: Path) -> None:
    cfg = load_config(str(path))
    values = config_to_values(cfg)
    again = values_to_config(values, cfg.base_dir)
    assert dump_config(again) == dump_config(cfg)


def test_values_as_the_browser_sends_them() -> None:
    """Numbers come back as floats, optional numbers and lists as text; unset is an empty box."""
    cfg = load_config(str(REPO / "configs" / "quickstart.yaml"))
    values = config_to_values(cfg)
    assert values["data.max_samples"] == "" and values["data.dataset"] == "demo_alpaca, identity"
    values["train.lora.rank"] = 16.0
    values["data.max_samples"] = "12"
    values["train.quantization.bit"] = "4"
    out = values_to_config(values)
    assert out.train.lora.rank == 16 and out.data.max_samples == 12 and out.train.quantization.bit == 4


def test_bad_values_are_marked_on_their_fields_with_the_schema_message() -> None:
    values = config_to_values(PipelineConfig())
    values["train.learning_rate"] = -1.0
    values["data.max_samples"] = "many"
    with pytest.raises(FormErrors) as caught:
        values_to_config(values)
    assert caught.value.errors == {"data.max_samples": "not an integer: 'many'"}  # unreadable first
    values["data.max_samples"] = ""
    values["registry.gate"] = "[{metric: eval_loss, direction: sideways}]"
    with pytest.raises(FormErrors) as caught:
        values_to_config(values)
    assert caught.value.errors["train.learning_rate"] == "Input should be greater than 0"
    assert "'lower' or 'higher'" in caught.value.errors["registry.gate"]


def test_a_model_validator_names_its_section() -> None:
    values = config_to_values(PipelineConfig())
    values["data.mask_history"] = values["data.train_on_prompt"] = True
    with pytest.raises(FormErrors) as caught:
        values_to_config(values)
    assert "cannot both be true" in caught.value.errors["data"]


def test_chinese_table_names_real_fields_and_falls_back_to_english() -> None:
    table = yaml.safe_load((REPO / "webui" / "zh.yaml").read_text(encoding="utf-8"))
    assert set(table["fields"]) <= {s.path for s in fields()}
    assert set(table["ui"]) <= set(i18n.UI_EN)
    spec = {s.path: s for s in fields()}
    assert i18n.label(spec["train.learning_rate"], "zh") == "学习率"
    new_field = FieldSpec("train.rl.new_knob", "float", 0.0, "A field added after the table.")
    assert i18n.label(new_field, "zh") == "new knob"  # no entry: English
    assert i18n.ui("start", "zh") == "开始" and i18n.ui("start", "en") == "Start"


def test_yaml_fields_and_secrets() -> None:
    spec = {s.path: s for s in fields()}
    gate = spec["registry.gate"]
    text = to_form(gate, PipelineConfig().registry.gate)
    assert from_form(gate, text) == [
        {"metric": "eval_loss", "direction": "lower", "min_improvement": 0.0, "relative": False}
    ]
    assert spec["serve.api_key"].kind == "secret" and from_form(spec["serve.api_key"], "") is None


def test_auth_credentials() -> None:
    assert credentials("ana:pw:x") == ("ana", "pw:x")
    assert credentials(None) is None
    from ftcore.errors import ConfigError

    with pytest.raises(ConfigError, match="user:password"):
        credentials("ana")


def test_job_status_is_read_back_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reopened board finds the job's state, progress, curve and flow run in its folder."""
    import json
    import subprocess
    import sys

    from ftcore.train.progress import Progress
    from webui import jobs

    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path))
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    jobdir = tmp_path / "j"
    jobdir.mkdir()
    (jobdir / "job.json").write_text(json.dumps({"pid": int(done.stdout), "command": "ft run x.yaml"}))
    prefix = "11:39:07.781 | INFO    | Task run 'train-a6c' - "
    url = "http://127.0.0.1:4200/runs/flow-run/5804ea17-2be3-43e7-882a-5e101cd2c651"
    lines = [
        "=== 2026-11-28 11:00:00 ft run x.yaml",
        "11:38:12 | INFO | Flow run 'hopeful-dog' - Beginning flow run 'hopeful-dog' for flow 'finetune'",
        f"11:38:12 | INFO | Flow run 'hopeful-dog' - View at {url}",
    ]
    for step, loss in ((2, 2.5), (4, 2.0)):
        record = Progress(step, 8, loss, 1e-3, tokens_per_s=1234.0, eta_s=10.0)
        lines.append(prefix + record.line())
    (jobdir / "log.txt").write_text("\n".join(lines) + "\n")
    (jobdir / "rc").write_text("0")
    status = jobs.status("j")
    assert status.state == "completed" and (status.step, status.max_steps) == (4, 8)
    assert status.losses == [(2, 2.5), (4, 2.0)]
    assert status.tokens_per_s == "1.2k" and status.eta == "00:00:10"
    assert (status.flow_run, status.flow_run_url) == ("hopeful-dog", url)
    assert jobs.list_jobs() == ["j"] and not jobs.stop("j")  # not running: nothing to stop


def test_gpu_only_switches_say_why_they_are_off() -> None:
    import torch

    from webui.form import unavailable

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the packages")
    assert "needs a CUDA GPU" in unavailable("train.speed.enable_liger_kernel")
    assert unavailable("train.learning_rate") is None


def test_exposed_board_needs_a_login(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import main

    monkeypatch.delenv("FTFLOW_WEBUI_AUTH", raising=False)
    assert main(["webui", "--host", "0.0.0.0"]) == 2
    assert "--auth user:password" in capsys.readouterr().err
