"""The body of a training run: load, prepare, train, save, write the manifest.

It runs inside the worker process (ftcore.train.worker) that the train step starts; it can also be
called in-process (tests, debugging). Everything it needs travels in a TrainRequest (JSON), and all it
reports is the manifest it writes, so the step works the same with one process or a torchrun group.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.config.loader import dump_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import MEMORY_HINT, OutOfMemoryError

log = logging.getLogger("ftcore.train")


class TrainRequest(BaseModel):
    """What the train step hands to the worker process."""

    config: dict[str, Any]
    model: Artifact
    data: Artifact
    key: str
    output_dir: str
    resume_from: str | None = None

    @classmethod
    def build(
        cls, cfg: PipelineConfig, model: Artifact, data: Artifact, key: str, out: Path, resume: Path | None
    ) -> TrainRequest:
        # base_dir is excluded from dumps (it is not config); the worker still needs it for inputs
        config = {**cfg.model_dump(mode="json"), "base_dir": cfg.base_dir}
        return cls(
            config=config,
            model=model,
            data=data,
            key=key,
            output_dir=str(out),
            resume_from=str(resume) if resume else None,
        )

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig.model_validate(self.config)


def run_training(request: TrainRequest, extra_callbacks: list[Any] | None = None) -> Artifact | None:
    """Train as the request says; writes <output_dir>/model and then the manifest, returns it. In a
    torchrun group every rank trains; rank 0 alone tracks, saves and returns the manifest (others: None)."""
    import datasets
    from transformers import set_seed

    from ftcore.data.template import apply_template, get_template
    from ftcore.modeling import load_tokenizer, saved_dtype
    from ftcore.steps.common import JobRun
    from ftcore.train import HEADS, OBJECTIVES, distributed
    from ftcore.train.callbacks import MetricsCallback, ProgressCallback
    from ftcore.train.methods import method_for
    from ftcore.train.rewards import with_local_reward_model
    from ftcore.train.trackers import tracker_callbacks, tracker_environment

    cfg = with_local_reward_model(request.pipeline_config(), Path(request.output_dir) / "reward_model")
    model, data, key, out = request.model, request.data, request.key, Path(request.output_dir)
    resume_from = Path(request.resume_from) if request.resume_from else None
    method = method_for(cfg)
    cfg.train.distributed = distributed.worker_settings(cfg)  # env applied, DeepSpeed / FSDP files read
    cfg.train.speed.packing_len = cfg.train.speed.packing_len or cfg.data.cutoff_len
    main = distributed.is_main()
    if cfg.train.distributed.fsdp and distributed.world_size() > 1:
        import torch

        if not torch.cuda.is_available():
            distributed.enable_fsdp_on_cpu()

    opened = (
        JobRun.for_key(cfg, key, {"ftflow.objective": cfg.train.stage})
        if main and "mlflow" in cfg.train.report_to
        else contextlib.nullcontext()
    )
    with opened as tracking:  # the run ends FINISHED, FAILED or KILLED, however training ends
        callbacks: list[Any] = [ProgressCallback(), *(extra_callbacks or [])]
        if tracking:
            tracking.params(cfg.model_dump(mode="json", exclude={"base_dir"}))
            callbacks.append(MetricsCallback(tracking.metrics))
        set_seed(cfg.train.seed)
        tokenizer = load_tokenizer(model.path, cfg.model.trust_remote_code)
        train_set = datasets.load_from_disk(str(Path(data.path) / "train"))
        if cfg.data.streaming:  # read in order, from the row the checkpoint recorded
            from ftcore.train.streaming import streamed_train_set

            train_set, position = streamed_train_set(Path(data.path) / "train", cfg, resume_from)
            callbacks.append(position)
        report_to, project = cfg.train.report_to, cfg.registry.experiment
        callbacks += tracker_callbacks(report_to, out, cfg.name, project)
        environment = tracker_environment(report_to, out, cfg.name, project)
        head = HEADS.get(cfg.train.stage, "causal_lm")

        def prepared() -> Any:
            loaded = method.load(model.path, cfg.train, cfg.model.trust_remote_code, head=head)
            return method.prepare(loaded, cfg.train)

        with out_of_memory_as_user_error(cfg.train.stage), environment as tracker_dirs:
            result = OBJECTIVES[cfg.train.stage](
                prepared(),
                tokenizer,
                train_set,
                cfg.train,
                out / "checkpoints",
                resume_from,
                callbacks,
                method,
            )
            # FSDP: every rank takes part in gathering the weights
            final = distributed.model_to_save(result["model"], prepared)
        if final is None:  # not rank 0: nothing to write
            distributed.barrier()
            return None
        with atomic_dir(out / "model") as tmp:
            method.save(final, tmp, saved_dtype(model.path))
            # the template it was trained with, as its chat_template, and its stop tokens as eos
            apply_template(get_template(data.metadata["template"]), tmp, tokenizer)
            (tmp / "ftflow_config.yaml").write_text(dump_config(cfg))
        final_loss = next((e["loss"] for e in reversed(result["log_history"]) if "loss" in e), None)
        metrics = {k: float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float))}
        plots = loss_plots(result["log_history"], out / "plots")
        if tracking:
            tracking.artifacts(out / "plots", "plots")
            tracking.metrics({f"train/{k}": v for k, v in metrics.items()}, result["global_step"])
    artifact = Artifact(
        kind=method.artifact_kind,
        path=str(out / "model"),
        fingerprint=fingerprint_path(out / "model"),
        metadata={
            "key": key,
            "objective": cfg.train.stage,
            "finetuning_type": cfg.train.finetuning_type,
            "method": method.name,
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
            "plots": {name: str(path) for name, path in plots.items()},
            "tracker_dirs": {name: str(path) for name, path in tracker_dirs.items()},
            "processes": distributed.world_size(),
            "sharded": distributed.is_sharded(result["model"]),
            "tracking_uri": tracking.uri if tracking else None,
        },
    )
    write_manifest(out, artifact)
    distributed.barrier()  # the group ends once the manifest is there (other nodes read it)
    return artifact


def loss_plots(log_history: list[dict[str, Any]], plot_dir: Path) -> dict[str, Path]:
    """The loss curve as a PNG, for MLflow and the step's report in the Prefect UI."""
    from ftcore.plots import plot_loss_curve

    return {"loss_curve": plot_loss_curve(log_history, plot_dir / "loss_curve.png")}


@contextlib.contextmanager
def out_of_memory_as_user_error(stage: str) -> Iterator[None]:
    """An out-of-memory error becomes a message naming the settings that need less memory (retrying
    the same settings would run out again). The Python MemoryError covers host memory on CPU."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        where = "GPU" if isinstance(exc, torch.OutOfMemoryError) else "host"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OutOfMemoryError(
            f"train (stage {stage}) ran out of {where} memory ({detail}); {MEMORY_HINT}"
        ) from exc
