"""Merging a LoRA adapter: the merged model computes what base + adapter computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ftcore import steps
from ftcore.artifacts import is_present
from ftcore.data.template import Template, get_template, infer_template
from ftcore.modeling import load_model, load_tokenizer, load_with_adapter
from tests.helpers import prepared_inputs, small_config


def test_merged_model_matches_base_plus_adapter(tmp_path: Path) -> None:
    # Trained with `qwen` (Qwen2.5's system prompt) on tiny-qwen2, whose own Jinja is Qwen2-Instruct's:
    # the merged model must serve with the template it was trained with, not the base tokenizer's.
    cfg = small_config(tmp_path / "job", "train.report_to=none", "train.max_steps=6", "data.template=qwen")
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    merged = steps.merge(cfg, model, trained)

    out = Path(merged.path)
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")), "safetensors only"
    assert not (out / "adapter_config.json").exists()

    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    ids = torch.randint(0, vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = load_with_adapter(model.path, trained.path, dtype="float32", device="cpu")(
            input_ids=ids
        ).logits
        reloaded = load_model(out, dtype="float32", device="cpu")(input_ids=ids).logits
        base = load_model(model.path, dtype="float32", device="cpu")(input_ids=ids).logits
    assert (reference - reloaded).abs().max().item() < 1e-4
    assert (reference - base).abs().max().item() > 1e-3, (
        "the adapter must change the logits, or parity is vacuous"
    )
    assert merged.metadata["base_model_ref"] == "builtin:tiny-qwen2"
    _serves_with_trained_template(out, get_template("qwen"))

    assert steps.merge(cfg, model, trained) == merged  # second call reuses the finished merge
    assert is_present(merged) and is_present(trained) and is_present(model)
    shutil.rmtree(out)
    assert not is_present(merged)


def test_full_finetune_exports_its_weights_with_card_and_modelfile(tmp_path: Path) -> None:
    """A full fine-tune's export is a folder of its own: the trained weights (hard links, the same
    bytes), a model card and an Ollama Modelfile; dtype asks for a re-save, never touching training."""
    import os

    cfg = small_config(
        tmp_path / "job", "train.report_to=none", "train.finetuning_type=full", "train.max_steps=2"
    )
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    merged = steps.merge(cfg, model, trained)
    out, src = Path(merged.path), Path(trained.path)
    assert merged.kind == "merged" and out != src
    assert (out / "README.md").is_file() and (out / "Modelfile").is_file()
    for weights in src.glob("*.safetensors"):
        assert os.path.samefile(weights, out / weights.name)  # linked, not copied
    assert is_present(merged) and is_present(trained)
    half = steps.merge(
        cfg.model_copy(update={"export": cfg.export.model_copy(update={"dtype": "float16"})}), model, trained
    )
    assert Path(half.path) != out
    config = json.loads((Path(half.path) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16"
    assert not any(os.path.samefile(w, Path(half.path) / w.name) for w in src.glob("*.safetensors"))
    assert json.loads((src / "config.json").read_text()).get("dtype") != "float16"  # training untouched


def _serves_with_trained_template(out: Path, template: Template) -> None:
    """The merged model's own chat_template renders the ids training encoded, and its
    generation_config stops at the template's end of turn."""
    tokenizer = load_tokenizer(out)
    conversation = [
        {"role": "user", "content": "Reverse the word.\nstone"},
        {"role": "assistant", "content": "enots"},
        {"role": "user", "content": "And  this one?\nlamp "},
        {"role": "assistant", "content": "pmal"},
    ]
    trained = [i for p, r in template.encode_multiturn(tokenizer, conversation) for i in p + r]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"]
    assert list(rendered) == trained
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=True, add_generation_prompt=True)
    assert list(prompt["input_ids"]) == template.encode_prompt(tokenizer, conversation[:-1])
    assert "You are Qwen, created by Alibaba Cloud." in tokenizer.decode(trained)
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    eos = [eos] if isinstance(eos, int) else eos
    assert set(template.stop_token_ids(tokenizer)) <= set(eos)
    assert infer_template(out) == template.name  # a later fetch of the merged model finds it too
