"""Method settings from config: LLaMA-Factory's flat keys, wrong combinations refused at config time
naming both keys, method selection and the train cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ftcore.config import load_config
from ftcore.errors import ConfigError
from ftcore.train.methods import method_for, method_name
from tests.helpers import small_config

FLAT_METHODS = {
    "model_name_or_path": "builtin:tiny-qwen2",
    "stage": "sft",
    "finetuning_type": "freeze",
    "freeze_trainable_layers": -1,
    "freeze_trainable_modules": "mlp,self_attn",
    "freeze_extra_modules": "norm",
    "additional_target": "embed_tokens",
    "use_rslora": True,
    "use_dora": True,
    "pissa_init": False,
    "pissa_iter": 4,
    "pissa_convert": True,
    "loraplus_lr_ratio": 16.0,
    "loraplus_lr_embedding": 1e-5,
    "quantization_method": "bitsandbytes",
    "quantization_type": "fp4",
    "double_quantization": False,
    "galore_target": "q_proj,v_proj",
    "galore_rank": 4,
    "galore_update_interval": 7,
    "galore_scale": 0.5,
    "galore_proj_type": "left",
    "apollo_rank": 2,
    "apollo_scale": 8.0,
    "apollo_proj": "svd",
    "apollo_scale_type": "tensor",
    "badam_mode": "layer",
    "badam_switch_interval": 3,
    "badam_update_ratio": 0.2,
    "disable_gradient_checkpointing": True,
    "flash_attn": "disabled",
    "neftune_noise_alpha": 5,
    "rope_scaling": "yarn",
    "enable_liger_kernel": False,
    "use_unsloth": False,
}


def test_llamafactory_method_keys_map(tmp_path: Path) -> None:
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(FLAT_METHODS))
    t = load_config(path).train
    assert t.finetuning_type == "freeze"
    assert (t.freeze.trainable_layers, t.freeze.trainable_modules, t.freeze.extra_modules) == (
        -1,
        ["mlp", "self_attn"],
        ["norm"],
    )
    assert t.lora.additional_target == ["embed_tokens"] and t.lora.use_rslora and t.lora.use_dora
    assert (t.lora.pissa_iter, t.lora.loraplus_lr_ratio, t.lora.loraplus_lr_embedding) == (4, 16.0, 1e-5)
    q = t.quantization
    assert (q.bit, q.method, q.type, q.double_quantization) == (None, "bnb", "fp4", False)
    g = t.galore
    assert (g.target, g.rank, g.update_interval, g.scale, g.proj_type) == (
        ["q_proj", "v_proj"],
        4,
        7,
        0.5,
        "left",
    )
    a = t.apollo
    assert (a.rank, a.scale, a.proj, a.scale_type) == (2, 8.0, "svd", "tensor")
    b = t.badam
    assert (b.mode, b.switch_interval, b.update_ratio) == ("layer", 3, 0.2)
    s = t.speed
    assert s.gradient_checkpointing is False  # disable_gradient_checkpointing: true
    assert (s.flash_attn, s.neftune_noise_alpha, s.rope_scaling) == ("eager", 5.0, "yarn")


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ({"finetuning_type": "full", "use_galore": True}, "galore"),
        ({"finetuning_type": "full", "use_apollo": True}, "apollo"),
        ({"finetuning_type": "full", "use_badam": True}, "badam"),
        ({"finetuning_type": "lora", "quantization_bit": 4}, "qlora"),
        ({"finetuning_type": "lora"}, "lora"),
        ({"finetuning_type": "freeze"}, "freeze"),
    ],
)
def test_flat_keys_pick_the_method(tmp_path: Path, flat: dict, expected: str) -> None:
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "builtin:tiny-qwen2", **flat}))
    cfg = load_config(path)
    assert method_name(cfg.train) == expected
    assert method_for(cfg).name == expected


LAYERWISE_GALORE = ["train.finetuning_type=full", "train.galore.enabled=true", "train.galore.layerwise=true"]


@pytest.mark.parametrize(
    ("overrides", "first", "second"),
    [
        (["train.galore.enabled=true"], "train.galore.enabled", "train.finetuning_type=lora"),
        (
            ["train.finetuning_type=freeze", "train.badam.enabled=true"],
            "train.badam.enabled",
            "finetuning_type",
        ),
        (
            ["train.finetuning_type=full", "train.galore.enabled=true", "train.apollo.enabled=true"],
            "train.galore.enabled",
            "train.apollo.enabled",
        ),
        (
            ["train.lora.pissa_init=true", "train.quantization.bit=4"],
            "train.lora.pissa_init",
            "quantization.bit",
        ),
        (
            ["train.finetuning_type=full", "train.quantization.bit=8"],
            "train.quantization.bit",
            "finetuning_type",
        ),
        (
            [*LAYERWISE_GALORE, "train.gradient_accumulation_steps=2"],
            "train.galore.layerwise",
            "train.gradient_accumulation_steps",
        ),
        (["train.lora.pissa_init=true", "train.lora.train_adapter=true"], "pissa_init", "train_adapter"),
        (
            ["train.lora.use_dora=true", "train.quantization.bit=8"],
            "train.lora.use_dora",
            "quantization.bit=8",
        ),
        (["train.speed.rope_scaling=linear"], "train.speed.rope_scaling", "train.finetuning_type=lora"),
    ],
)
def test_wrong_combinations_name_both_keys(
    tmp_path: Path, overrides: list[str], first: str, second: str
) -> None:
    with pytest.raises(ConfigError) as err:
        small_config(tmp_path, *overrides)
    assert first in str(err.value) and second in str(err.value)


def test_flat_combination_error_names_both_flat_meanings(tmp_path: Path) -> None:
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "builtin:tiny-qwen2", "use_galore": True}))
    with pytest.raises(
        ConfigError, match=r"train\.galore\.enabled cannot be used with train\.finetuning_type=lora"
    ):
        load_config(path)


def test_a_lf_training_file_with_an_adapter_trains_it_further(tmp_path: Path) -> None:
    """LLaMA-Factory trains on top of adapter_name_or_path when do_train is true; ftflow's native default
    (train.lora.train_adapter: false) keeps using a given adapter as the trained result."""
    from ftcore.steps.table import plan

    flat = {"model_name_or_path": "builtin:tiny-qwen2", "adapter_name_or_path": str(tmp_path), "dataset": "x"}
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({**flat, "do_train": True}))
    trains = load_config(path)
    path.write_text(yaml.safe_dump(flat))
    uses = load_config(path)
    assert trains.train.lora.train_adapter and not uses.train.lora.train_adapter
    assert "train" in [s.name for s in plan(trains)] and "adapter" not in [s.name for s in plan(trains)]
    assert "adapter" in [s.name for s in plan(uses)] and "train" not in [s.name for s in plan(uses)]


def test_train_key_holds_only_the_chosen_methods_settings(tmp_path: Path) -> None:
    from ftcore.steps.keys import train_section

    full = train_section(small_config(tmp_path, "train.finetuning_type=full"))
    assert not {"lora", "freeze", "quantization", "galore", "apollo", "badam"} & full.keys()
    assert "speed" in full
    freeze = train_section(small_config(tmp_path, "train.finetuning_type=freeze"))
    assert "freeze" in freeze and "lora" not in freeze
    lora = train_section(small_config(tmp_path))
    assert {"lora", "quantization"} <= lora.keys() and "freeze" not in lora
