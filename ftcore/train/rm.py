"""Reward model (stage rm): the base with a one-number score head, trained on chosen / rejected pairs
with the pairwise loss -log sigmoid(r_chosen - r_rejected) by TRL's RewardTrainer (which reports
pairwise accuracy and margin). The features are ftflow's pairwise ones, used as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.train.methods import TrainingMethod

# The model head each objective trains (the job passes it to TrainingMethod.load); default causal_lm.
HEADS = {"rm": "score"}


def run_rm(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """Train the score-head model in place; returns metrics and log history like every objective."""
    from trl import RewardConfig, RewardTrainer

    from ftcore.train.pref import trl_args
    from ftcore.train.trainers import fit

    class Trainer(RewardTrainer):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            keep = {"chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"}
            dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
            return dataset.rename_columns(keep)

    if model.config.pad_token_id is None:  # the score is read at the last non-pad token
        model.config.pad_token_id = tokenizer.pad_token_id
    _score_in_its_own_dtype(model)
    args = trl_args(RewardConfig, cfg, checkpoint_dir, method, max_length=None)
    return fit(
        Trainer, model, args, tokenizer, callbacks, method, cfg, resume_from, train_dataset=train_dataset
    )


def _score_in_its_own_dtype(model: Any) -> None:
    """QLoRA: kbit preparation upcasts the norms, so the head gets fp32 hidden states while its own
    weights keep the load dtype; cast the head's input to its weight's dtype."""
    import torch

    def cast(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        dtype = module.weight.dtype
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    for name, module in model.named_modules():
        if "score" in name.split(".") and isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(cast)


def load_reward_model(path: str | Path, trust_remote_code: bool = False, dtype: str = "float32") -> Any:
    """An rm job's output, frozen and in eval mode, from any of its forms: the merged folder or a full
    fine-tune's model/ (a *ForSequenceClassification model), or a LoRA model/ folder (its
    adapter_config names the base; the adapter carries the trained score head). For models:/NAME@ALIAS
    download the version first (ftcore.registry.download)."""
    import json

    from ftcore.modeling import load_model

    folder = Path(path)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        model = load_model(base, trust_remote_code, dtype=dtype, head="score")
        model = PeftModel.from_pretrained(model, str(folder))
    else:
        model = load_model(folder, trust_remote_code, dtype=dtype, head="score")
    model.requires_grad_(False)
    return model.eval()
