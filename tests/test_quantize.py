"""The quantize step: each method quantizes a tiny merged model with the real library; the export
reloads, generates, and its last-token logits stay close to the unquantized model's.

llm-compressor and gptqmodel run in their side virtualenvs (`ft env install llmcompressor gptqmodel`;
CI installs both): their tests skip with that command as the reason when one is missing. The
quantized folder is reloaded in that same side env (tests/quantized_logits.py): compressed-tensors
and GPTQ folders need libraries that ftflow's own env does not carry.

Tolerances, cosine similarity of the last-token logits with the unquantized model's, worst prompt
(measured on the tiny random-weight model, width 128 / 256, which quantizes worse than trained models):
see TOLERANCE.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ftcore import steps, venvs
from ftcore.config import PipelineConfig, load_config
from ftcore.errors import ConfigError
from ftcore.export import quantizers
from ftcore.modeling import load_model, load_tokenizer
from ftcore.steps.keys import quantize_key
from ftcore.steps.table import plan, run_local
from tests.helpers import REPO, prepared_inputs, small_config

PROMPTS = [
    "Give three tips for staying healthy.",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a neural network is.",
]
MAX_NEW_TOKENS = 6
# method/scheme -> minimum cosine similarity of last-token logits (measured minimum, with margin)
# measured 2026-11-28: bnb 0.959, W4A16 0.959, W8A8 0.9993, W8A16 0.9999, gptqmodel 4-bit 0.969,
# 8-bit 0.9997 (README "Quantized export")
TOLERANCE = {
    "bnb": 0.90,
    "llmcompressor-W4A16": 0.90,
    "llmcompressor-W8A8": 0.99,
    "llmcompressor-W8A16": 0.99,
    "gptqmodel-4": 0.90,
    "gptqmodel-8": 0.99,
}
LOGITS_SCRIPT = REPO / "tests" / "quantized_logits.py"


def needs_side_env(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not venvs.is_installed(name),
        reason=f"side env '{name}' not installed: run `ft env install {name}` (CI does)",
    )


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A real merged model (4 LoRA steps on tiny-qwen2), its training rows and its fp32 reference logits."""
    workdir = tmp_path_factory.mktemp("quantize") / "job"
    cfg = small_config(workdir, "train.report_to=none", "train.max_steps=4", "registry.enabled=false")
    model, data = prepared_inputs(cfg)
    merged = steps.merge(cfg, model, steps.train(cfg, model, data))
    tokenizer = load_tokenizer(merged.path)
    prompts = [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )["input_ids"]
        )
        for text in PROMPTS
    ]
    reference = scores(load_model(merged.path, dtype="float32", device="cpu"), prompts)
    return SimpleNamespace(workdir=workdir, merged=merged, data=data, prompts=prompts, reference=reference)


def config(job: SimpleNamespace, **export: object) -> PipelineConfig:
    return small_config(
        job.workdir, "train.report_to=none", "train.max_steps=4", "registry.enabled=false", export=export
    )


def scores(model: torch.nn.Module, prompts: list[list[int]]) -> dict[str, list]:
    logits, generated = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            logits.append(model(input_ids=ids).logits[0, -1].float().tolist())
            out = model.generate(input_ids=ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            generated.append(out[0, ids.shape[1] :].tolist())
    return {"logits": logits, "generated": generated}


def side_env_scores(env: str, model_dir: str, loader: str, prompts: list[list[int]], tmp: Path) -> dict:
    """Reload `model_dir` in side env `env` and score the prompts there."""
    args = {
        "model_dir": model_dir,
        "loader": loader,
        "prompts": prompts,
        "max_new_tokens": MAX_NEW_TOKENS,
        "out": str(tmp / "scores.json"),
    }
    (tmp / "args.json").write_text(json.dumps(args))
    venvs.run_script(env, LOGITS_SCRIPT, [str(tmp / "args.json")], tmp / "reload.log", timeout_s=1800)
    return json.loads((tmp / "scores.json").read_text())


def check_close(job: SimpleNamespace, got: dict, tolerance_name: str) -> float:
    """Worst-prompt cosine similarity of the logits, asserted against TOLERANCE; the export generates."""
    ref = torch.tensor(job.reference["logits"])
    out = torch.tensor(got["logits"])
    assert out.shape == ref.shape
    cosine = torch.nn.functional.cosine_similarity(ref, out, dim=-1).min().item()
    max_abs = (ref - out).abs().max().item()
    print(f"{tolerance_name}: min cosine {cosine:.4f}, max |dlogit| {max_abs:.3f}")
    assert cosine >= TOLERANCE[tolerance_name], (tolerance_name, cosine)
    assert cosine < 0.999999, "the quantized logits equal the original: nothing was quantized"
    assert all(len(ids) > 0 for ids in got["generated"])
    return cosine


def quant_config_of(path: str) -> dict:
    return json.loads((Path(path) / "config.json").read_text())["quantization_config"]


def test_bnb_nf4_reloads_in_transformers_and_stays_close(job: SimpleNamespace) -> None:
    cfg = config(job, export_quantization_method="bnb")
    quantized = steps.quantize(cfg, job.merged, job.data)
    out = Path(quantized.path)
    assert quant_config_of(quantized.path)["quant_method"] == "bitsandbytes"
    assert quant_config_of(quantized.path)["bnb_4bit_quant_type"] == "nf4"
    assert not list(out.glob("*.bin")), "safetensors only"
    for name in ("tokenizer.json", "chat_template.jinja", "generation_config.json", "ftflow_config.yaml"):
        assert (out / name).is_file(), name
    model = load_model(out, dtype="float32", device_map="cpu")
    assert any("4bit" in type(m).__name__ for m in model.modules()), "weights reload as bnb 4-bit"
    check_close(job, scores(model, job.prompts), "bnb")
    assert quantized.metadata["tags"] == {
        "ftflow.quantization.method": "bnb",
        "ftflow.quantization.bit": "4",
        "ftflow.quantization.scheme": "nf4",
    }
    assert steps.quantize(cfg, job.merged, job.data) == quantized  # the second call reuses it


@needs_side_env("llmcompressor")
@pytest.mark.parametrize("scheme", ["W4A16", "W8A8", "W8A16"])
def test_llmcompressor_exports_compressed_tensors(job: SimpleNamespace, scheme: str, tmp_path: Path) -> None:
    cfg = config(job, export_quantization_method="llmcompressor", export_quantization_scheme=scheme)
    quantized = steps.quantize(cfg, job.merged, job.data)
    qc = quant_config_of(quantized.path)
    assert qc["quant_method"] == "compressed-tensors"
    weights = next(iter(qc["config_groups"].values()))["weights"]
    assert weights["num_bits"] == int(scheme[1])
    got = side_env_scores("llmcompressor", quantized.path, "transformers", job.prompts, tmp_path)
    check_close(job, got, f"llmcompressor-{scheme}")


@needs_side_env("gptqmodel")
@pytest.mark.parametrize("bit", [4, 8])
def test_gptqmodel_exports_gptq(job: SimpleNamespace, bit: int, tmp_path: Path) -> None:
    cfg = config(job, export_quantization_method="gptqmodel", export_quantization_bit=bit)
    quantized = steps.quantize(cfg, job.merged, job.data)
    qc = quant_config_of(quantized.path)
    assert qc["quant_method"] == "gptq" and qc["bits"] == bit and qc["group_size"] == 128
    got = side_env_scores("gptqmodel", quantized.path, "gptqmodel", job.prompts, tmp_path)
    check_close(job, got, f"gptqmodel-{bit}")


def test_quantize_key_moves_with_what_changes_the_result(job: SimpleNamespace) -> None:
    gptq = config(job, export_quantization_method="gptqmodel")
    fewer = config(job, export_quantization_method="gptqmodel", export_quantization_nsamples=8)
    assert quantize_key(gptq, job.merged, job.data) != quantize_key(fewer, job.merged, job.data)
    bnb = config(job, export_quantization_method="bnb")
    bnb_fewer = config(job, export_quantization_method="bnb", export_quantization_nsamples=8)
    # nf4 has no calibration: calibration settings and data stay out of its key
    assert quantize_key(bnb, job.merged, job.data) == quantize_key(bnb_fewer, job.merged, job.data)
    # LLaMA-Factory: export_quantization_bit alone means GPTQ
    assert quantizers.resolve(config(job, export_quantization_bit=8).export).method == "gptqmodel"
    assert [s.name for s in plan(config(job))][-1] == "merge", "no quantize step without a method"


def test_quantizing_an_unmerged_adapter_is_refused_before_heavy_work(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "export.merge=false", "export.export_quantization_method=bnb")
    with pytest.raises(ConfigError, match=r"export\.merge is false: merge first"):
        run_local(cfg, until="quantize", lookup=("train",))
    assert not list(tmp_path.glob("quantized-*"))


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ({"export_quantization_method": "bnb", "export_quantization_bit": 8}, "bnb export supports 4"),
        (
            {"export_quantization_method": "gptqmodel", "export_quantization_scheme": "W8A8"},
            "applies to llmcompressor only",
        ),
        (
            {
                "export_quantization_method": "llmcompressor",
                "export_quantization_bit": 8,
                "export_quantization_scheme": "W4A16",
            },
            "W4A16 has 4-bit weights",
        ),
    ],
)
def test_bad_bit_or_scheme_names_the_key(tmp_path: Path, export: dict, message: str) -> None:
    cfg = small_config(tmp_path, export=export)
    with pytest.raises(ConfigError, match=r"export\.export_quantization_(bit|scheme)") as err:
        quantizers.check(cfg.export)
    assert message in str(err.value)
    with pytest.raises(ConfigError, match="export_quantization_bit"):
        small_config(tmp_path, export={"export_quantization_bit": 3})  # not 4 or 8: refused at load


def test_missing_side_env_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTFLOW_VENVS", str(tmp_path / "no-venvs"))
    monkeypatch.delenv("FTFLOW_LLMCOMPRESSOR_PYTHON", raising=False)
    cfg = small_config(tmp_path / "job", export={"export_quantization_method": "llmcompressor"})
    with pytest.raises(venvs.SideEnvError, match="ft env install llmcompressor"):
        run_local(cfg, until="quantize", lookup=("train",))


def test_missing_calibration_data_is_named(tmp_path: Path) -> None:
    export = {"export_quantization_method": "gptqmodel", "export_quantization_dataset": "calib.jsonl"}
    cfg = small_config(tmp_path, export=export)
    from ftcore.export.quantizers.calibration import check_quantization

    with pytest.raises(ConfigError, match=r"export\.export_quantization_dataset: file .*calib\.jsonl"):
        check_quantization(cfg)
    cfg = small_config(tmp_path, export={**export, "export_quantization_dataset": "no_such_dataset"})
    with pytest.raises(ConfigError, match="no_such_dataset"):
        check_quantization(cfg)


def test_llamafactory_keys_map_onto_the_export_section(tmp_path: Path) -> None:
    flat = {
        "model_name_or_path": "builtin:tiny-qwen2",
        "stage": "sft",
        "finetuning_type": "lora",
        "dataset": "demo_alpaca",
        "export_quantization_bit": 4,
        "export_quantization_method": "llmcompressor",
        "export_quantization_dataset": "demo_alpaca",
        "export_quantization_nsamples": 16,
        "export_quantization_maxlen": 256,
        "export_quantization_group_size": 64,
        "workdir": str(tmp_path),
    }
    q = quantizers.resolve(load_config(flat).export)
    assert (q.method, q.bit, q.scheme, q.dataset) == ("llmcompressor", 4, "W4A16", "demo_alpaca")
    assert (q.nsamples, q.maxlen, q.group_size) == (16, 256, 64)


def test_register_keeps_the_quantized_export_in_its_version(job: SimpleNamespace, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    from ftcore import tracking

    cfg = small_config(
        job.workdir, "train.report_to=none", "train.max_steps=4", export={"export_quantization_method": "bnb"}
    )
    quantized = steps.quantize(cfg, job.merged, job.data)
    registered = steps.register(cfg, job.merged, None, quantized)
    uri = registered.metadata["tracking_uri"]
    version = tracking.get_client(uri).get_model_version(
        cfg.registry.model_name, str(registered.metadata["version"])
    )
    assert version.tags["ftflow.quantization.method"] == "bnb"
    assert version.tags["ftflow.quantization.bit"] == "4"
    assert version.tags["ftflow.quantization.scheme"] == "nf4"
    assert version.tags["ftflow.quantization.path"] == "quantized"
    local = download_artifacts(
        artifact_uri=f"{version.source}/quantized", dst_path=str(tmp_path), tracking_uri=uri
    )
    assert quant_config_of(local)["quant_method"] == "bitsandbytes"
    assert (Path(local) / "tokenizer.json").is_file()
    # the same merged model without its quantized export is another version (another key)
    plain = steps.register(cfg, job.merged, None)
    assert plain.metadata["version"] != registered.metadata["version"]
    assert "ftflow.quantization.method" not in plain.metadata["tags"]


def test_ft_export_runs_up_to_quantize_without_retraining_or_remerging(job: SimpleNamespace) -> None:
    from flows.cli import main

    cfg_file = job.workdir.parent / "export.yaml"
    cfg_file.write_text(config(job).model_dump_json())  # JSON is YAML
    key = quantize_key(config(job, export_quantization_method="bnb"), job.merged, job.data)
    expected = job.workdir / f"quantized-{key[:12]}"
    shutil.rmtree(expected, ignore_errors=True)  # made by an earlier test of this module, if any
    before = {name: sorted(job.workdir.glob(f"{name}-*")) for name in ("train", "merged")}
    assert main(["export", str(cfg_file), "export.export_quantization_method=bnb"]) == 0
    # a quantization setting is not in the merge key: the finished training and merge are reused
    assert {name: sorted(job.workdir.glob(f"{name}-*")) for name in ("train", "merged")} == before
    assert quant_config_of(str(expected))["quant_method"] == "bitsandbytes"
    assert (expected / "ftflow-manifest.json").is_file()


def test_export_dir_names_the_quantized_folder_and_user_data_is_refused(
    job: SimpleNamespace, tmp_path: Path
) -> None:
    cfg = config(job, export_quantization_method="bnb", export_dir=str(tmp_path / "out"))
    quantized = steps.quantize(cfg, job.merged, job.data)
    assert quantized.path == str(tmp_path / "out-bnb-nf4")
    mine = tmp_path / "mine"
    (mine.parent / "mine-bnb-nf4").mkdir()
    (mine.parent / "mine-bnb-nf4" / "notes.txt").write_text("the user's")
    cfg = config(job, export_quantization_method="bnb", export_dir=str(mine))
    with pytest.raises(ConfigError, match=r"export\.export_dir: .*ftflow did not write"):
        steps.quantize(cfg, job.merged, job.data)
    assert (mine.parent / "mine-bnb-nf4" / "notes.txt").read_text() == "the user's"
