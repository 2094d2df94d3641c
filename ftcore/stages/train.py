"""train: stage x method -> an adapter or a full model, resumable from the last complete checkpoint.

Layout of the stage directory: checkpoints/ (the Trainer's, kept across kills so a restart resumes),
model/ (the final weights, renamed into place when complete) and the manifest, written last.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.config.loader import dump_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import TrainConfig
from ftcore.errors import ConfigError
from ftcore.stages.common import JobRun, reuse, stage_dir
from ftcore.stages.keys import train_key

log = logging.getLogger("ftcore.stages")

KEY_FILE = "ftflow-train-key"


def train(cfg: PipelineConfig, model: Artifact, data: Artifact) -> Artifact:
    """Fine-tune the base model on the tokenized data; reuse a finished run with the same key."""
    key = train_key(cfg, model, data)
    out = stage_dir(cfg, "train", key, cfg.train.output_dir)
    done = reuse(out, key, "train")
    if done is not None:
        return done
    _claim(out, key)

    import datasets
    from transformers import set_seed

    from ftcore.modeling import load_model, load_tokenizer
    from ftcore.train import METHODS, STAGES
    from ftcore.train.callbacks import MetricsCallback, ProgressCallback
    from ftcore.train.checkpoints import resolve_resume

    checkpoints = out / "checkpoints"
    resume_from = resolve_resume(cfg.train.resume_from_checkpoint, checkpoints)
    if resume_from:
        log.info("[train] resuming from %s", resume_from)

    tracking = (
        JobRun.for_key(cfg, key, {"ftflow.stage": cfg.train.stage})
        if "mlflow" in cfg.train.report_to
        else None
    )
    callbacks = [ProgressCallback()]
    if tracking:
        tracking.params(cfg.model_dump(mode="json", exclude={"base_dir"}))
        callbacks.append(MetricsCallback(tracking.metrics))

    set_seed(cfg.train.seed)
    tokenizer = load_tokenizer(model.path, cfg.model.trust_remote_code)
    base = load_model(model.path, cfg.model.trust_remote_code, dtype=weight_dtype(cfg.train))
    base.train()
    prepared = METHODS[cfg.train.finetuning_type](base, cfg.train)
    train_set = datasets.load_from_disk(str(Path(data.path) / "train"))
    try:
        result = STAGES[cfg.train.stage](
            prepared, tokenizer, train_set, cfg.train, checkpoints, resume_from, callbacks
        )
    except BaseException:
        if tracking:
            tracking.finish("FAILED")
        raise

    with atomic_dir(out / "model") as tmp:
        trained = result["model"]
        trained.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if cfg.train.finetuning_type == "full" and getattr(trained, "generation_config", None) is not None:
            trained.generation_config.save_pretrained(tmp)
        (tmp / "ftflow_config.yaml").write_text(dump_config(cfg))
    final_loss = next((e["loss"] for e in reversed(result["log_history"]) if "loss" in e), None)
    metrics = {k: float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    if tracking:
        from ftcore.tracking import plot_loss_curve

        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        plot_loss_curve(result["log_history"], plot_dir / "loss_curve.png")
        tracking.artifacts(plot_dir, "plots")
        tracking.metrics({f"train/{k}": v for k, v in metrics.items()}, result["global_step"])
        tracking.finish()
    artifact = Artifact(
        kind="adapter" if cfg.train.finetuning_type == "lora" else "model",
        path=str(out / "model"),
        fingerprint=fingerprint_path(out / "model"),
        metadata={
            "key": key,
            "stage": cfg.train.stage,
            "finetuning_type": cfg.train.finetuning_type,
            "base_model_path": model.path,
            "base_model_ref": model.metadata.get("ref"),
            "base_model_revision": model.metadata.get("revision"),
            "base_model_fingerprint": model.fingerprint,
            "dataset_fingerprint": data.metadata.get("dataset_fingerprint"),
            "tokenized_fingerprint": data.fingerprint,
            "template": data.metadata.get("template"),
            "global_step": result["global_step"],
            "resumed_from": str(resume_from) if resume_from else None,
            "final_loss": final_loss,
            "metrics": metrics,
            "mlflow_run_id": tracking.run_id if tracking else None,
            "tracking_uri": tracking.uri if tracking else None,
        },
    )
    write_manifest(out, artifact)
    return artifact


def weight_dtype(train_cfg: TrainConfig) -> str:
    """LoRA under bf16 keeps the frozen base in bf16 (half the memory; peft keeps the adapter in fp32);
    full fine-tuning keeps fp32 master weights and lets autocast do bf16 compute."""
    from ftcore.train.sft import resolve_bf16

    return "bfloat16" if train_cfg.finetuning_type == "lora" and resolve_bf16(train_cfg) else "float32"


def _claim(out: Path, key: str) -> None:
    """Refuse to mix checkpoints of a different config into this run's output_dir."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / KEY_FILE
    if marker.is_file() and marker.read_text().strip() != key:
        if any((out / "checkpoints").glob("checkpoint-*")) or (out / "model").exists():
            raise ConfigError(
                f"train.output_dir {out} holds a run with a different config; choose a new output_dir "
                "or delete that folder"
            )
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    marker.write_text(key)
