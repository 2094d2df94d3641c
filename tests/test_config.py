"""Config: every shipped YAML validates, defaults, overrides, error messages, the LLaMA-Factory flat
format, `ft config show` / `ft config schema`, and secrets kept out of dumps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import main as ft
from ftcore.builtin import BUILTINS
from ftcore.config import PipelineConfig, dump_config, load_config
from ftcore.config.llamafactory import IGNORED_KEYS, KEY_MAP
from ftcore.data import get_template, load_dataset_info
from ftcore.errors import ConfigError, FtflowError
from ftcore.hub import parse_ref

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _write(tmp: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _load_error(source: Any, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides)
    return str(info.value)


# --- every shipped config (torchtune tests/recipes/test_configs.py, litgpt test_config_hub.py) ---


def test_configs_are_shipped() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "quickstart.yaml",
        "sft_lora_llama.yaml",
        "sft_full_qwen2.yaml",
        "llamafactory_sft_lora.yaml",
        "sft_lora_hf_example.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # users run `ft` from the repo root: dataset_dir: data is relative to it
    text = path.read_text()
    assert text.startswith("#"), "every shipped config starts with a comment saying what it shows"
    rel = path.relative_to(REPO)
    assert any(f"ft {command} {rel}" in text for command in ("train", "run", "export")), "says how to run it"

    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    # The names it uses exist: datasets in dataset_info.json, the template, the built-in model.
    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    info = load_dataset_info(dataset_dir)
    for name in [*cfg.data.dataset, *cfg.data.eval_dataset]:
        assert name in info, f"{path.name}: dataset {name!r} not in {dataset_dir}/dataset_info.json"
    if cfg.data.template:
        get_template(cfg.data.template)
    source, name, _ = parse_ref(cfg.model.name_or_path, cfg.model.revision)
    assert source in ("builtin", "hf", "ms")
    if source == "builtin":
        assert name in BUILTINS
        # runnable in seconds on a CPU (an export config trains nothing)
        exports = f"ft export {path.relative_to(REPO)}" in text
        assert 0 < cfg.train.max_steps <= 60 or exports or path.name == "quickstart.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_passes_preflight(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same checks `ft run` makes before any heavy work (every data row is parsed)."""
    from ftcore.steps import preflight

    monkeypatch.chdir(REPO)
    cfg = load_config(path)
    if cfg.model.name_or_path.startswith("hf:"):
        pytest.skip("needs the hub model in the local cache; see tests/test_hub.py for that path")
    adapter = cfg.model.adapter_name_or_path
    if adapter and not cfg.resolve_input(adapter).exists():
        # an export config over the adapter another config trains: until then, a clear error
        with pytest.raises(ConfigError, match=r"model\.adapter_name_or_path"):
            preflight(cfg)
        return
    if (cfg.train.rl.reward_model or "").startswith("models:/"):
        # ppo over the reward model an rm config registers: until then, a clear error naming the key
        with pytest.raises(FtflowError, match=r"train\.rl\.reward_model"):
            preflight(cfg)
        return
    preflight(cfg)


def test_example_configs_mean_what_they_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    llama = load_config(REPO / "configs/sft_lora_llama.yaml")
    assert (llama.model.name_or_path, llama.data.template) == ("builtin:tiny-llama", "llama3")
    assert llama.train.finetuning_type == "lora"
    full = load_config(REPO / "configs/sft_full_qwen2.yaml")
    assert full.train.finetuning_type == "full"
    hf = load_config(REPO / "configs/sft_lora_hf_example.yaml")
    assert parse_ref(hf.model.name_or_path)[:2] == ("hf", "Qwen/Qwen2.5-0.5B-Instruct")
    assert "HF cache" in (REPO / "configs/sft_lora_hf_example.yaml").read_text().replace(
        "Hugging Face ", "HF "
    )
    flat_raw = yaml.safe_load((REPO / "configs/llamafactory_sft_lora.yaml").read_text())
    assert "model" not in flat_raw and "train" not in flat_raw  # truly flat
    lf = load_config(REPO / "configs/llamafactory_sft_lora.yaml")
    assert lf.model.name_or_path == "builtin:tiny-qwen2"
    assert lf.data.dataset == ["demo_alpaca", "identity"]
    assert lf.train.lora.target == ["all"]
    assert lf.train.report_to == ["none"]
    assert lf.train.bf16 is False


# --- defaults and overrides ---


def test_defaults() -> None:
    cfg = load_config({})
    assert cfg == PipelineConfig()
    assert cfg.name == "ftflow-job"
    assert cfg.model.name_or_path == "builtin:tiny-qwen2"
    assert cfg.model.trust_remote_code is False
    assert cfg.data.dataset == ["demo_alpaca", "identity"]
    assert cfg.data.dataset_dir == "data"
    assert cfg.data.eval_dataset == []
    assert cfg.train.stage == "sft"
    assert cfg.train.finetuning_type == "lora"
    assert cfg.train.lora.rank == 8
    assert cfg.train.lora.alpha is None
    assert cfg.train.lora.target == ["all"]
    assert cfg.train.max_steps == -1
    assert cfg.train.resume_from_checkpoint == "auto"
    assert cfg.train.report_to == ["mlflow"]
    assert cfg.serve.api_key is None
    assert cfg.serve.host == "127.0.0.1"
    assert cfg.workdir_path == (Path.cwd() / "runs" / "ftflow-job").resolve()


def test_overrides_are_typed(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  learning_rate: 1.0e-4\n")
    cfg = load_config(path, ["train.learning_rate=2e-4", "train.lora.rank=4", "data.dataset=a,b"])
    assert isinstance(cfg.train.learning_rate, float)
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.train.lora.rank == 4 and isinstance(cfg.train.lora.rank, int)
    assert cfg.data.dataset == ["a", "b"]


def test_override_more_forms() -> None:
    cfg = load_config(
        {},
        [
            "name=my-job",
            "train.bf16=false",
            "train.resume_from_checkpoint=null",
            "train.lora.target=[q_proj, v_proj]",
            "data.max_samples=10",
            "eval.enabled=no",
        ],
    )
    assert cfg.name == "my-job"
    assert cfg.train.bf16 is False
    assert cfg.train.resume_from_checkpoint is None
    assert cfg.train.lora.target == ["q_proj", "v_proj"]
    assert cfg.data.max_samples == 10
    assert cfg.eval.enabled is False


def test_override_applies_to_a_loaded_config() -> None:
    base = load_config({"train": {"max_steps": 5}})
    cfg = load_config(base, ["train.learning_rate=3e-4"])
    assert cfg.train.max_steps == 5
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert load_config(base) is base


def test_override_of_unknown_key_errors() -> None:
    assert "unknown config key 'train.learning_rat'" in _load_error({}, ["train.learning_rat=1"])
    assert "unknown config key 'bogus'" in _load_error({}, ["bogus=1"])
    assert "unknown config key 'train.lora.rnak'" in _load_error({}, ["train.lora.rnak=1"])


def test_override_malformed() -> None:
    assert "train.learning_rate" in _load_error({}, ["train.learning_rate"])  # no '='
    assert "no key" in _load_error({}, ["=3"])
    # a dotted path through a value, not a section: named whether or not the value was set
    assert "'learning_rate' is a value" in _load_error(
        {"train": {"learning_rate": 1.0}}, ["train.learning_rate.x=1"]
    )
    assert "invalid value for 'train.learning_rate'" in _load_error({}, ["train.learning_rate.x=1"])


def test_override_invalid_value_names_the_field() -> None:
    message = _load_error({}, ["train.lora.rank=0"])
    assert "train.lora.rank" in message and "greater than 0" in message


# --- error messages: file, line, key ---


def test_unknown_nested_key_names_key_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ntrain:\n  max_steps: 3\n  lora:\n    rnak: 4\n")
    message = _load_error(path)
    assert f"{path}:5" in message
    assert "unknown config key 'train.lora.rnak'" in message


def test_unknown_top_level_key_names_key_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\n\nmodle:\n  name_or_path: builtin:tiny-qwen2\n")
    message = _load_error(path)
    assert f"{path}:3: unknown config key 'modle'" in message


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  learning_rat: 1\n  max_steps: abc\nbogus: 1\n")
    message = _load_error(path)
    assert f"{path}:2: unknown config key 'train.learning_rat'" in message
    assert f"{path}:3: invalid value for 'train.max_steps'" in message
    assert f"{path}:4: unknown config key 'bogus'" in message


def test_invalid_value_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  finetuning_type: qlorax\ndata:\n  val_size: 1.5\n")
    message = _load_error(path)
    assert f"{path}:2: invalid value for 'train.finetuning_type' ('qlorax')" in message
    assert f"{path}:4: invalid value for 'data.val_size' (1.5)" in message


def test_file_level_errors(tmp_path: Path) -> None:
    assert "config file not found" in _load_error(tmp_path / "missing.yaml")
    assert "invalid YAML" in _load_error(_write(tmp_path, "train: [1,\n", "broken.yaml"))
    assert "must be a mapping" in _load_error(_write(tmp_path, "- a\n- b\n", "list.yaml"))
    empty = _write(tmp_path, "# nothing here yet\n", "empty.yaml")
    assert _load_error(empty) == (
        f"{empty} is empty: it names no model, data or training (see configs/quickstart.yaml)"
    )


def test_duplicate_key_names_file_key_and_both_lines(tmp_path: Path) -> None:
    nested = _write(tmp_path, "train:\n  learning_rate: 1.0e-3\n  max_steps: 3\n  learning_rate: 2.0e-3\n")
    message = _load_error(nested)
    assert message.startswith(f"{nested}:4: key 'train.learning_rate' is given twice (lines 2 and 4)")
    flat = _write(tmp_path, "stage: sft\nlearning_rate: 1\ndataset: a\nlearning_rate: 2\n", "flat.yaml")
    assert f"{flat}:4: key 'learning_rate' is given twice (lines 2 and 4)" in _load_error(flat)
    # the same key in different sections is no duplicate
    load_config(_write(tmp_path, "train:\n  seed: 1\ndata:\n  seed: 2\n", "ok.yaml"))


def test_base_dir_is_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "mydata").mkdir()
    cfg = load_config(_write(tmp_path, "data:\n  dataset_dir: mydata\n"))
    assert cfg.base_dir == str(tmp_path.resolve())
    assert cfg.resolve_input("mydata") == tmp_path.resolve() / "mydata"
    assert "base_dir" not in dump_config(cfg)


# --- LLaMA-Factory flat format ---


def test_flat_configs_get_their_own_job_and_model_names(tmp_path: Path) -> None:
    """LLaMA-Factory files have no job name: one per output_dir (else per file), not all 'ftflow-job'."""
    base = "model_name_or_path: builtin:tiny-qwen2\nstage: sft\ndataset: demo_alpaca\n"
    by_output = load_config(_write(tmp_path, base + "output_dir: saves/qwen/lora/sft-alpaca\n", "a.yaml"))
    assert (by_output.name, by_output.registry.model_name) == ("sft-alpaca", "sft-alpaca")
    assert by_output.workdir_path.name == "sft-alpaca"
    by_file = load_config(_write(tmp_path, base, "qwen_identity.yaml"))
    assert (by_file.name, by_file.registry.model_name) == ("qwen_identity", "qwen_identity")
    overridden = load_config(tmp_path / "qwen_identity.yaml", ["output_dir=/tmp/x/run7"])
    assert overridden.name == "run7"
    given = load_config(tmp_path / "a.yaml", ["name=mine"])
    assert (given.name, given.registry.model_name) == ("mine", "sft-alpaca")


FLAT_ALL = {
    "model_name_or_path": "hf:meta-llama/Meta-Llama-3-8B-Instruct",
    "adapter_name_or_path": "saves/llama3-8b/lora/sft",
    "template": "llama3",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target": "q_proj,v_proj",
    "dataset": "identity,alpaca_en_demo",
    "dataset_dir": "my_data",
    "eval_dataset": "alpaca_en_eval",
    "val_size": 0.1,
    "cutoff_len": 2048,
    "max_samples": 1000,
    "output_dir": "saves/llama3-8b/lora/sft",
    "logging_steps": 7,
    "save_steps": 250,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0,
    "max_steps": 123,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.1,
    "bf16": True,
    "fp16": False,
    "seed": 1234,
    "report_to": "none",
    "resume_from_checkpoint": "saves/llama3-8b/lora/sft/checkpoint-100",
    "export_dir": "output/llama3_lora_merged",
}


def test_llamafactory_flat_maps_every_key(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump(FLAT_ALL, sort_keys=False))
    cfg = load_config(path)
    expected = {
        "model_name_or_path": cfg.model.name_or_path,
        "adapter_name_or_path": cfg.model.adapter_name_or_path,
        "template": cfg.data.template,
        "stage": cfg.train.stage,
        "finetuning_type": cfg.train.finetuning_type,
        "lora_rank": cfg.train.lora.rank,
        "lora_alpha": cfg.train.lora.alpha,
        "lora_dropout": cfg.train.lora.dropout,
        "dataset_dir": cfg.data.dataset_dir,
        "val_size": cfg.data.val_size,
        "cutoff_len": cfg.data.cutoff_len,
        "max_samples": cfg.data.max_samples,
        "output_dir": cfg.train.output_dir,
        "logging_steps": cfg.train.logging_steps,
        "save_steps": cfg.train.save_steps,
        "per_device_train_batch_size": cfg.train.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps,
        "learning_rate": cfg.train.learning_rate,
        "num_train_epochs": cfg.train.num_train_epochs,
        "max_steps": cfg.train.max_steps,
        "lr_scheduler_type": cfg.train.lr_scheduler_type,
        "warmup_ratio": cfg.train.warmup_ratio,
        "bf16": cfg.train.bf16,
        "fp16": cfg.train.fp16,
        "seed": cfg.train.seed,
        "resume_from_checkpoint": cfg.train.resume_from_checkpoint,
        "export_dir": cfg.export.export_dir,
    }
    for key, got in expected.items():
        assert got == FLAT_ALL[key], key
    # comma-separated strings become lists
    assert cfg.train.lora.target == ["q_proj", "v_proj"]
    assert cfg.data.dataset == ["identity", "alpaca_en_demo"]
    assert cfg.data.eval_dataset == ["alpaca_en_eval"]
    assert cfg.train.report_to == ["none"]
    # the data seed is not the training seed
    assert cfg.data.seed == PipelineConfig().data.seed
    # do_train is accepted (and changes nothing); every key in the test is either mapped or ignored
    assert set(FLAT_ALL) <= set(KEY_MAP) | IGNORED_KEYS
    # every key the adapter maps lands on a real field
    for dotted in KEY_MAP.values():
        node: Any = cfg
        for part in dotted.split("."):
            node = getattr(node, part)


def test_llamafactory_flat_from_dict_and_with_flat_overrides() -> None:
    cfg = load_config(
        {"model_name_or_path": "builtin:tiny-qwen2", "lora_target": "all"},
        ["learning_rate=1e-3", "lora_rank=4", "train.max_steps=9", "workdir=/tmp/x"],
    )
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.train.lora.rank == 4
    assert cfg.train.max_steps == 9
    assert cfg.workdir == "/tmp/x"


def test_llamafactory_unknown_flat_key_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "model_name_or_path: builtin:tiny-qwen2\nstage: sft\nlora_rnak: 8\n")
    message = _load_error(path)
    assert "unknown LLaMA-Factory key 'lora_rnak'" in message
    assert str(path) in message


def test_llamafactory_invalid_value_names_the_flat_key_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "model_name_or_path: builtin:tiny-qwen2\nstage: sft\nlora_rank: 0\n")
    message = _load_error(path)
    assert f"{path}:3: invalid value for 'lora_rank' (0)" in message
    path = _write(tmp_path, "model_name_or_path: builtin:tiny-qwen2\nstage: dpoo\n", "stage.yaml")
    assert f"{path}:2: invalid value for 'stage' ('dpoo')" in _load_error(path)


def test_llamafactory_do_train_false_is_refused() -> None:
    assert "do_train: false" in _load_error({"model_name_or_path": "builtin:tiny-qwen2", "do_train": False})


# --- CLI: ft config show / schema ---


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_show_round_trips(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert ft(["config", "show", str(path), "train.learning_rate=3e-4", "data.max_samples=50"]) == 0
    shown = capsys.readouterr().out
    again = load_config(_write(tmp_path, shown, "shown.yaml"))
    original = load_config(path, ["train.learning_rate=3e-4", "data.max_samples=50"])
    # base_dir (the file's folder) is the only difference, and it is not part of the dump
    assert again.model_dump() == original.model_dump()
    assert again.train.learning_rate == pytest.approx(3e-4)
    # the shown config is the native, sectioned format even for a flat LLaMA-Factory file
    assert set(yaml.safe_load(shown)) == set(PipelineConfig.model_fields) - {"base_dir"}


def test_config_show_error_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "train:\n  learning_rat: 1\n")
    assert ft(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: unknown config key 'train.learning_rat'" in err
    assert "Traceback" not in err


def _missing_descriptions(node: Any, where: str = "#") -> list[str]:
    """Paths of schema properties that carry no description, searched through the whole schema."""
    missing: list[str] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if not (isinstance(prop, dict) and str(prop.get("description", "")).strip()):
                missing.append(f"{where}/properties/{name}")
        for key, value in node.items():
            missing += _missing_descriptions(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _missing_descriptions(value, f"{where}/{i}")
    return missing


def test_schema_piped_into_a_closed_reader_ends_quietly() -> None:
    """`ft config schema | head`: the reader leaves early; no BrokenPipeError traceback, exit 0."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "config", "schema"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # before the first write: every write now fails with EPIPE, as after `head` exits
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_config_schema_is_json_and_every_field_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    assert ft(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    sections = {"model", "data", "train", "eval", "export", "registry", "serve"}
    assert sections <= set(schema["properties"])
    defs = schema["$defs"]
    for name in ("ModelConfig", "DataConfig", "TrainConfig", "LoraConfig", "EvalConfig", "ExportConfig"):
        assert defs[name]["properties"], name
        assert defs[name].get("additionalProperties") is False, f"{name} must forbid extra keys"
    for name in ("RegistryConfig", "ServeConfig"):
        assert defs[name]["properties"], name
    assert _missing_descriptions(schema) == []
    # the walk does visit every section's fields
    counted = sum(len(d["properties"]) for d in defs.values()) + len(schema["properties"])
    assert counted > 50


# --- secrets ---


def test_api_key_never_dumped_in_clear(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secret = "sk-very-secret-123"
    cfg = load_config({"serve": {"api_key": secret, "host": "0.0.0.0"}})
    assert cfg.serve.api_key is not None and cfg.serve.api_key.get_secret_value() == secret
    assert secret not in dump_config(cfg)
    assert secret not in repr(cfg) and secret not in str(cfg)
    assert secret not in cfg.model_dump_json()
    path = _write(tmp_path, "name: x\n")
    assert ft(["config", "show", str(path), f"serve.api_key={secret}"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert "api_key: '**********'" in out


def test_overrides_on_a_loaded_config_keep_the_api_key() -> None:
    cfg = load_config({"serve": {"api_key": "sk-abc"}})
    again = load_config(cfg, ["train.max_steps=3"])
    assert again.serve.api_key is not None
    assert again.serve.api_key.get_secret_value() == "sk-abc"


def test_overrides_do_not_mutate_the_callers_dict() -> None:
    raw = {"train": {"learning_rate": 1e-4}}
    load_config(raw, ["train.learning_rate=2e-4"])
    assert raw == {"train": {"learning_rate": 1e-4}}


def test_numeric_looking_override_of_a_text_field_stays_text() -> None:
    cfg = load_config({}, ["model.revision=20240101", "name=123"])
    assert cfg.model.revision == "20240101"
    assert cfg.name == "123"


def test_unknown_flat_key_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "model_name_or_path: builtin:tiny-qwen2\nstage: sft\nlora_rnak: 8\n")
    with pytest.raises(ConfigError, match=r":3: unknown LLaMA-Factory key 'lora_rnak'"):
        load_config(path)
