"""One W1 training run of one tool, in its own process (its own interpreter: ftflow's and TRL's in
ftflow's virtualenv, LLaMA-Factory's in its own), measured the same way for every tool:

    python bench/w1_drivers.py TOOL SPEC.json RESULT.json

The Meter callback counts the non-padding input tokens of every batch the Trainer draws (attention
mask != 0 where the batch has one: LLaMA-Factory's neat_packing mask holds segment numbers; else every
input id, since padding-free batches have no padding), times the training loop (train begin -> end)
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

    def _count(self, batch: Any) -> Any:
        mask = batch.get("attention_mask") if hasattr(batch, "get") else None
        if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
            self.tokens += int((mask != 0).sum())
        else:
            self.tokens += int(batch["input_ids"].numel())
        return batch

    def on_train_begin(
        self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kw: Any
    ) -> None:
        if train_dataloader is not None:
            collate = train_dataloader.collate_fn
            train_dataloader.collate_fn = lambda features: self._count(collate(features))
        self.start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.end = time.perf_counter()
        if not self.tokens:  # the collate hook did not take: the Trainer's own count
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
        }


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


def run_trl(spec: dict[str, Any], meter: Meter) -> None:
    """TRL's SFTTrainer with its defaults on the same rows (prompt = instruction + input)."""
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
        max_steps=c["max_steps"],
        num_train_epochs=c.get("epochs", 1),
        learning_rate=c["lr"],
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=c["bf16"],
        use_cpu=True,
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
