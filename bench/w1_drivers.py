"""One W1 training run of one tool, in its own process (its own interpreter: ftflow's and TRL's in
ftflow's virtualenv, LLaMA-Factory's in its own), measured the same way for every tool:

    python bench/w1_drivers.py TOOL SPEC.json RESULT.json

The Meter callback counts the non-padding input tokens of every batch at the decoder's forward (see
Meter._non_padding), times the training loop (train begin -> end)
and keeps the logged losses. Imports only transformers (and the tool).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class Meter(TrainerCallback):
    def __init__(self) -> None:
        self.tokens = 0
        self.losses: list[float] = []
        self.start = self.end = 0.0
        self.steps = 0

    @staticmethod
    def _non_padding(input_ids: Any, mask: Any) -> int:
        """Real tokens of a batch: a 2-D mask's non-zeros (LLaMA-Factory's neat_packing mask holds
        segment numbers), a 4-D additive mask's attending diagonal (its block-diagonal packing mask,
        where a padding position attends to nothing), else every input id (padding-free rows)."""
        if mask is not None and mask.dim() == 2:
            return int((mask != 0).sum())
        if mask is not None and mask.dim() == 4:
            diag = mask.diagonal(dim1=-2, dim2=-1)
            attends = diag if str(diag.dtype) == "torch.bool" else diag == 0  # additive: 0 attends
            return int(attends.sum())
        return int(input_ids.numel())

    def _count_forward(self, module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.tokens += self._non_padding(ids, kwargs.get("attention_mask"))

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        # Counted where every tool's batch passes: the decoder's forward (older Trainers, LLaMA-Factory's,
        # give callbacks no dataloader here; ftflow's fused loss calls the decoder, not the model).
        if model is not None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base.get_decoder().register_forward_pre_hook(self._count_forward, with_kwargs=True)
        self.start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.end = time.perf_counter()
        if not self.tokens:  # the hook did not take: the Trainer's own count, if it kept one
            self.tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    def result(self) -> dict[str, Any]:
        seconds = self.end - self.start
        tail = self.losses[-5:]
        return {
            "tokens": self.tokens,
            "seconds": seconds,
            "tokens_per_s": self.tokens / seconds if seconds else 0.0,
            "steps": self.steps,
            "final_loss": sum(tail) / len(tail) if tail else None,  # mean of the last 5 logged steps
            "losses": self.losses,
            "peak_gpu_gb": _peak_gpu_gb(),
        }


def _peak_gpu_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def run_ftflow(spec: dict[str, Any], meter: Meter) -> None:
    """ftflow's sft path as `ft train` runs it (fetch, preprocess, run_sft), in process."""
    import datasets

    from ftcore import steps
    from ftcore.config import load_config
    from ftcore.modeling import load_tokenizer
    from ftcore.train.methods import method_for
    from ftcore.train.sft import run_sft

    cfg = load_config(spec["config"], spec.get("overrides", []))
    model_art = steps.fetch_model(cfg)
    data = steps.preprocess(cfg, model_art, steps.fetch_dataset(cfg))
    cfg.train.speed.packing_len = cfg.train.speed.packing_len or cfg.data.cutoff_len
    method = method_for(cfg)
    model = method.prepare(method.load(model_art.path, cfg.train), cfg.train)
    train_set = datasets.load_from_disk(str(Path(data.path) / "train"))
    tokenizer = load_tokenizer(model_art.path)
    out = Path(cfg.workdir) / "bench-run"
    run_sft(model, tokenizer, train_set, cfg.train, out / "checkpoints", None, [meter], method)


def run_llamafactory(spec: dict[str, Any], meter: Meter) -> None:
    from llamafactory.train.tuner import run_exp

    run_exp(args=spec["config"], callbacks=[meter])


# TRL's runs stop after this many steps (tok/s is a rate): its packing attends over the whole packed row,
# so on a 2-core CPU its 40 steps take ~15 minutes of a benchmark that must fit a quiet hour.
TRL_MAX_STEPS = 12


def run_trl(spec: dict[str, Any], meter: Meter) -> None:
    """TRL's SFTTrainer with its defaults on the same rows (prompt = instruction + input)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    c = spec["config"]
    rows = json.loads(Path(c["data_file"]).read_text())[: c.get("max_samples")]
    messages = [
        {
            "messages": [
                {"role": "user", "content": r["instruction"] + ("\n" + r["input"] if r["input"] else "")},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in rows
    ]
    args = SFTConfig(
        output_dir=c["output_dir"],
        per_device_train_batch_size=c["batch"],
        max_steps=min(c["max_steps"], TRL_MAX_STEPS) if c["max_steps"] > 0 else -1,
        num_train_epochs=c.get("epochs", 1),
        learning_rate=c["lr"],
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=c["bf16"],
        use_cpu=not torch.cuda.is_available(),
        max_length=c["cutoff"],
        packing=c["packing"],
    )
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(
        model=c["model"],
        args=args,
        train_dataset=Dataset.from_list(messages),
        peft_config=lora,
        callbacks=[meter],
    )
    trainer.train()


RUNNERS = {"ftflow": run_ftflow, "llamafactory": run_llamafactory, "trl": run_trl}

if __name__ == "__main__":
    tool, spec_path, result_path = sys.argv[1:4]
    meter = Meter()
    RUNNERS[tool](json.loads(Path(spec_path).read_text()), meter)
    Path(result_path).write_text(json.dumps(meter.result()))
