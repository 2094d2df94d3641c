"""Preference objectives dpo, kto, orpo and simpo on TRL's trainers, fed ftflow's own features.

The preprocess step already applied the template and tokenized (the data contract: pairwise rows carry
chosen_/rejected_ input_ids, attention_mask and labels with the prompt masked; kto rows carry
input_ids / labels, kl_input_ids / kl_labels and kto_tags). Each trainer here is TRL's, with only its
dataset preparation replaced: our features are turned into the ids TRL's collators expect, so TRL never
re-templates or re-tokenizes. The loss, reference handling and metrics stay TRL's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.data.processor import IGNORE_INDEX
from ftcore.train.methods import TrainingMethod
from ftcore.train.trainers import fit

log = logging.getLogger("ftcore.train")


def split_prompt(input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids): the prompt is everything before the first supervised label."""
    start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return list(input_ids[:start]), list(input_ids[start:])


def pairwise_to_trl(example: dict[str, Any]) -> dict[str, list[int]]:
    """Our pairwise features -> DPO's prompt_ids / chosen_ids / rejected_ids."""
    prompt, chosen = split_prompt(example["chosen_input_ids"], example["chosen_labels"])
    _, rejected = split_prompt(example["rejected_input_ids"], example["rejected_labels"])
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def kto_to_trl(example: dict[str, Any]) -> dict[str, Any]:
    """Our kto features -> KTO's prompt_ids / completion_ids / KL_completion_ids / label."""
    prompt, completion = split_prompt(example["input_ids"], example["labels"])
    _, kl_completion = split_prompt(example["kl_input_ids"], example["kl_labels"])
    return {
        "prompt_ids": prompt,
        "completion_ids": completion,
        "KL_completion_ids": kl_completion,
        "label": bool(example["kto_tags"]),
    }


def trl_args(
    config_class: Any, cfg: TrainConfig, checkpoint_dir: Path, method: TrainingMethod, **extra: Any
) -> Any:
    """A TRL config (a TrainingArguments subclass) with ftflow's training settings plus `extra`."""
    from ftcore.train.sft import training_argument_values

    values = training_argument_values(cfg, checkpoint_dir, method)
    values.setdefault("gradient_checkpointing", False)  # TRL turns it on by default; the method decides
    values["disable_dropout"] = True  # TRL's default for preference training, stated here
    return config_class(**values, **extra)


def reference_model(cfg: TrainConfig, trust_remote_code: bool, dtype: Any) -> Any:
    """train.pref.ref_model loaded frozen, or None: TRL then uses the base (LoRA: adapter disabled /
    a frozen copy of the fresh adapter, which equals the base; full: a frozen copy of the base)."""
    if not cfg.pref.ref_model:
        return None
    from ftcore.hub import resolve_model
    from ftcore.modeling import load_model

    path = resolve_model(cfg.pref.ref_model).path
    model = load_model(path, trust_remote_code, dtype=str(dtype).split(".")[-1])
    model.requires_grad_(False)
    return model


def _prepared(dataset: Any, convert: Any, columns: list[str]) -> Any:
    """Map our features to TRL's, keeping only TRL's columns (the rest would confuse its collators)."""
    return dataset.map(convert, remove_columns=[c for c in dataset.column_names if c not in columns])


def run_dpo(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """DPO (pref_loss sigmoid | hinge | ipo) against the frozen base or train.pref.ref_model; pref_ftx
    adds TRL's sft loss on the chosen answers with that weight."""
    from trl import DPOConfig, DPOTrainer

    class Trainer(DPOTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return _prepared(dataset, pairwise_to_trl, ["prompt_ids", "chosen_ids", "rejected_ids"])

    losses, weights = [cfg.pref.loss], [1.0]
    if cfg.pref.ftx > 0:
        losses, weights = [*losses, "sft"], [*weights, cfg.pref.ftx]
    args = trl_args(
        DPOConfig,
        cfg,
        checkpoint_dir,
        method,
        beta=cfg.pref.beta,
        loss_type=losses,
        loss_weights=weights,
        max_length=None,
    )
    ref = reference_model(cfg, False, model.dtype)
    return fit(
        Trainer,
        model,
        args,
        tokenizer,
        callbacks,
        method,
        cfg,
        resume_from,
        train_dataset=train_dataset,
        ref_model=ref,
    )


def run_kto(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """KTO: desirable / undesirable rows weighted by kto_chosen_weight / kto_rejected_weight; the KL
    baseline comes from the mismatched pairs the kto processor built."""
    from trl import KTOConfig, KTOTrainer

    class Trainer(KTOTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            columns = ["prompt_ids", "completion_ids", "KL_completion_ids", "label"]
            return _prepared(dataset, kto_to_trl, columns)

    args = trl_args(
        KTOConfig,
        cfg,
        checkpoint_dir,
        method,
        beta=cfg.pref.beta,
        desirable_weight=cfg.pref.kto_chosen_weight,
        undesirable_weight=cfg.pref.kto_rejected_weight,
        max_length=None,
    )
    ref = reference_model(cfg, False, model.dtype)
    return fit(
        Trainer,
        model,
        args,
        tokenizer,
        callbacks,
        method,
        cfg,
        resume_from,
        train_dataset=train_dataset,
        ref_model=ref,
    )


def _with_prompt(self: Any, feature: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """CPO / ORPO tokenize_row for our features: they already hold chosen_/rejected_ ids and labels;
    TRL also wants the prompt alone."""
    prompt, _ = split_prompt(feature["chosen_input_ids"], feature["chosen_labels"])
    return {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}


def run_orpo(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """ORPO: sft loss on chosen plus pref_beta x the odds-ratio term; no reference model."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class Trainer(ORPOTrainer):
        tokenize_row = _with_prompt

    args = trl_args(ORPOConfig, cfg, checkpoint_dir, method, beta=cfg.pref.beta, max_length=1 << 30)
    return fit(
        Trainer, model, args, tokenizer, callbacks, method, cfg, resume_from, train_dataset=train_dataset
    )


def run_simpo(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """SimPO: TRL's CPO with loss_type simpo and cpo_alpha 0 (no sft term), margin simpo_gamma."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    class Trainer(CPOTrainer):
        tokenize_row = _with_prompt

    args = trl_args(
        CPOConfig,
        cfg,
        checkpoint_dir,
        method,
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=cfg.pref.beta,
        simpo_gamma=cfg.pref.simpo_gamma,
        max_length=1 << 30,
    )
    return fit(
        Trainer, model, args, tokenizer, callbacks, method, cfg, resume_from, train_dataset=train_dataset
    )
