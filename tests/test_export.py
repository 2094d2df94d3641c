"""`ft export`'s merge settings, refusals, model card and Hub push."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ftcore import steps
from ftcore.artifacts import Artifact
from ftcore.config import load_config
from ftcore.errors import ConfigError, ServiceUnavailableError
from ftcore.export.merge import check_mergeable_base
from ftcore.modeling import load_model, load_with_adapter
from ftcore.steps import plan, preflight, run_local
from tests.helpers import REPO, free_port, prepared_inputs, small_config


def _names(planned) -> list[str]:
    return [step.name for step in planned]


def test_llamafactory_export_keys_map_and_legacy_format_is_refused(tmp_path: Path) -> None:
    flat = {
        "model_name_or_path": "builtin:tiny-qwen2",
        "stage": "sft",
        "finetuning_type": "lora",
        "dataset": "demo_alpaca",
        "dataset_dir": str(REPO / "data"),
        "workdir": str(tmp_path),
        "export_dir": str(tmp_path / "out"),
        "export_size": 2,
        "export_device": "auto",
        "export_legacy_format": False,
        "infer_dtype": "float16",
        "export_hub_model_id": "me/tiny",
    }
    export = load_config(flat).export
    assert (export.export_size, export.export_device, export.dtype) == (2, "auto", "float16")
    assert export.export_hub_model_id == "me/tiny" and not export.export_legacy_format
    with pytest.raises(ConfigError, match=r"export_legacy_format.*safetensors"):
        load_config({**flat, "export_legacy_format": True})
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        load_config({**flat, "hf_hub_token": "hf_x"})
    with pytest.raises(ConfigError, match=r"export\.dtype"):
        small_config(tmp_path, "export.dtype=int8")
    with pytest.raises(ConfigError, match=r"export\.export_size"):
        small_config(tmp_path, "export.export_size=0")


def test_merge_shards_dtype_card_and_modelfile(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path / "job",
        "train.report_to=none",
        "train.max_steps=4",
        "data.template=qwen",
        "eval.compare_base=false",
        "export.export_size=0.0002",  # 200 kB shards: the tiny model (1 MB) splits into several
        "export.dtype=float16",
    )
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    evaluation = steps.evaluate(cfg, model, data, trained)
    merged = steps.merge(cfg, model, trained, evaluation)
    out = Path(merged.path)

    shards = sorted(out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert all(p.stat().st_size <= 200_000 or _one_tensor(p) for p in shards)
    assert not list(out.glob("*.bin")), "safetensors only"
    with safe_open(shards[0], "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict) == {torch.float16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"

    # one unsharded export in the base's own dtype (auto): the shards hold the same weights
    whole_cfg = small_config(
        tmp_path / "job", "train.report_to=none", "train.max_steps=4", "data.template=qwen"
    )
    whole = Path(steps.merge(whole_cfg, model, trained).path)
    assert whole != out and (whole / "model.safetensors").is_file()
    assert json.loads((whole / "config.json").read_text())["dtype"] == "float32"
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = load_with_adapter(model.path, trained.path, dtype="float32", device="cpu")
        reference = reference(input_ids=ids).logits
        assert (
            load_model(whole, dtype="float32", device="cpu")(input_ids=ids).logits - reference
        ).abs().max() < 1e-4
        # the shards reload to exactly the unsharded weights rounded to float16
        sharded = load_model(out, dtype="float32", device="cpu")
        rounded = load_model(whole, dtype="float32", device="cpu")
        for param in rounded.parameters():
            param.copy_(param.half().float())
        weights = dict(rounded.named_parameters())
        for name, param in sharded.named_parameters():
            assert torch.equal(param, weights[name]), name
        logits = sharded(input_ids=ids).logits
        assert torch.equal(logits, rounded(input_ids=ids).logits)
        assert 0 < (logits - reference).abs().max() < 5e-2  # float16 rounding, nothing more

    card = (out / "README.md").read_text()
    for expected in (
        "`builtin:tiny-qwen2`",
        trained.metadata["dataset_fingerprint"],
        evaluation.metadata["eval_fingerprint"],
        "`qwen`",
        trained.path,
        "Config hash",
        "| tuned/eval_loss |",
        "ollama create",
        "ft serve",
    ):
        assert expected in card, expected
    assert card.startswith("---\nlibrary_name: transformers\n")
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ." in modelfile and "You are Qwen, created by Alibaba Cloud." in modelfile

    # LLaMA-Factory's merge config, run unchanged on the adapter (`ft export` takes this path)
    flat = REPO / "configs" / "llamafactory_merge_lora.yaml"
    lf_dir = tmp_path / "lf-export"
    overrides = [f"adapter_name_or_path={trained.path}", f"export_dir={lf_dir}", f"workdir={tmp_path / 'lf'}"]
    exported = run_local(load_config(flat, overrides), until="merge")["merged"]
    assert Path(exported.path) == lf_dir and (lf_dir / "model.safetensors").is_file()
    assert 'SYSTEM """You are a helpful assistant."""' in (lf_dir / "Modelfile").read_text()  # its qwen2
    assert "Not evaluated" in (lf_dir / "README.md").read_text()

    # merged again without scores (`ft export`): same weights, only the card is rewritten
    weights = {p.name: p.stat().st_ino for p in shards}
    again = steps.merge(cfg, model, trained)
    assert again.path == merged.path and again.fingerprint != merged.fingerprint
    assert {p.name: p.stat().st_ino for p in sorted(out.glob("model-*.safetensors"))} == weights
    assert "Not evaluated" in (out / "README.md").read_text()
    assert steps.merge(cfg, model, trained, evaluation).fingerprint == merged.fingerprint


def _one_tensor(path: Path) -> bool:
    with safe_open(path, "pt") as handle:
        return len(list(handle.keys())) == 1  # a tensor bigger than the shard size gets its own file


def _quantized_copy(tmp_path: Path, tiny_qwen2: Path, quantization: dict) -> Path:
    base = tmp_path / "quantized-base"
    shutil.copytree(tiny_qwen2, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
    (base / "ftflow_builtin.json").unlink(missing_ok=True)
    return base


def test_merging_into_a_quantized_base_is_refused_before_work(tmp_path: Path, tiny_qwen2: Path) -> None:
    base = _quantized_copy(tmp_path, tiny_qwen2, {"quant_method": "gptq", "bits": 4, "group_size": 128})
    cfg = small_config(tmp_path / "job", f"model.name_or_path={base}")
    merge_refused = r"export.merge: .* is quantized \(gptq\).*export.merge: false"
    with pytest.raises(ConfigError, match=merge_refused):  # `ft export`, before loading anything
        run_local(cfg, until="merge", lookup=["train"])
    # training on a GPTQ base needs a GPU: on this CPU the whole pipeline is refused for that first
    with pytest.raises(ConfigError, match="pre-quantized GPTQ checkpoint; training on it needs a CUDA GPU"):
        preflight(cfg)
    no_merge = small_config(tmp_path / "job", f"model.name_or_path={base}", "export.merge=false")
    preflight(no_merge, [name for name in _names(plan(no_merge)) if name != "train"])  # nothing refused
    bnb = _quantized_copy(
        tmp_path / "bnb", tiny_qwen2, {"quant_method": "bitsandbytes", "load_in_4bit": True}
    )
    with pytest.raises(ConfigError, match=r"quantized \(bitsandbytes\)"):
        check_mergeable_base(bnb)
    check_mergeable_base(tiny_qwen2)


def test_plan_merge_takes_eval_only_when_the_pipeline_makes_it(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "export.export_hub_model_id=me/tiny")
    full = _names(plan(cfg))
    assert full.index("evaluate") < full.index("merge") < full.index("push") < full.index("register")
    assert _names(plan(cfg, "merge")) == ["fetch_model", "fetch_dataset", "preprocess", "train", "merge"]
    assert _names(plan(cfg, "push"))[-2:] == ["merge", "push"]
    assert "push" not in _names(plan(small_config(tmp_path)))


def test_push_offline_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_config(tmp_path / "job", "export.export_hub_model_id=me/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ServiceUnavailableError, match="HF_HUB_OFFLINE"):
        run_local(cfg, until="push", lookup=["train"])
    assert not any(p.name.startswith(("merged-", "train-")) for p in tmp_path.glob("job/*"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens: no network
    with pytest.raises(ServiceUnavailableError, match="unreachable"):
        preflight(cfg)
    with pytest.raises(ConfigError, match="org/name"):
        preflight(small_config(tmp_path / "job", "export.export_hub_model_id=no-slash"))


def test_push_is_one_commit_of_the_export_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A mock of the remote Hub only (huggingface_hub's HTTP calls): no Hub exists here. The push must
    be one upload_folder call (one commit) of the folder, without ftflow's manifest, token from HF_TOKEN."""
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    class FakeCommit:
        commit_url = "https://hub.example/me/tiny/commit/1"

    def create_repo(self, repo_id: str, **kwargs) -> None:
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))

    def upload_folder(self, **kwargs) -> FakeCommit:
        calls.append(("upload_folder", {"token": self.token, **kwargs}))
        return FakeCommit()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr("ftcore.export.push._reachable", lambda endpoint: True)  # the Hub's address
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the tests' default: offline
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    cfg = small_config(
        tmp_path / "job", "export.export_hub_model_id=me/tiny", "export.export_hub_private=true"
    )
    with caplog.at_level(logging.DEBUG):
        pushed = steps.push(cfg, Artifact(kind="merged", path=str(folder), fingerprint="f"))
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["private"] is True and calls[0][1]["exist_ok"] is True
    upload = calls[1][1]
    assert upload["folder_path"] == str(folder) and upload["repo_id"] == "me/tiny"
    assert "ftflow-manifest.json" in upload["ignore_patterns"]
    assert upload["token"] == "hf_secret_token_value"
    assert pushed.kind == "pushed" and pushed.path == FakeCommit.commit_url
    assert "hf_secret_token_value" not in caplog.text
