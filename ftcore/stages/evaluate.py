"""evaluate: held-out loss, perplexity and generation metrics of the base and the fine-tuned model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.config.pipeline import PipelineConfig
from ftcore.stages.common import JobRun, reuse, stage_dir
from ftcore.stages.keys import evaluate_key

log = logging.getLogger("ftcore.stages")


def evaluate(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> Artifact:
    """Score base (if compare_base) and fine-tuned model; metrics.json + samples.jsonl + MLflow."""
    key = evaluate_key(cfg, model, data, trained)
    out = stage_dir(cfg, "eval", key)
    done = reuse(out, key, "evaluate")
    if done is not None:
        return done

    import datasets

    from ftcore.data.template import get_template
    from ftcore.modeling import load_model, load_tokenizer

    eval_set = datasets.load_from_disk(str(Path(data.path) / "eval"))
    if cfg.eval.max_samples:
        eval_set = eval_set.select(range(min(cfg.eval.max_samples, len(eval_set))))
    rows = [
        json.loads(line) for line in (Path(data.path) / "eval_rows.jsonl").read_text().splitlines() if line
    ]
    rows = rows[: cfg.eval.generation_samples]
    template = get_template(data.metadata["template"])
    trust = cfg.model.trust_remote_code

    results: dict[str, dict[str, Any]] = {}
    if trained is None or trained.kind == "adapter":
        base = load_model(model.path, trust, dtype="float32")
        tokenizer = load_tokenizer(model.path, trust)
        if trained is None:
            results["base"] = _score(base, tokenizer, template, eval_set, rows, cfg)
        else:
            from peft import PeftModel

            tuned = PeftModel.from_pretrained(base, trained.path)
            tuned.eval()
            if cfg.eval.compare_base:
                with tuned.disable_adapter():
                    results["base"] = _score(tuned, tokenizer, template, eval_set, rows, cfg)
            results["tuned"] = _score(tuned, tokenizer, template, eval_set, rows, cfg)
    else:
        tokenizer = load_tokenizer(trained.path, trust)
        if cfg.eval.compare_base:
            results["base"] = _score(
                load_model(model.path, trust, dtype="float32"), tokenizer, template, eval_set, rows, cfg
            )
        results["tuned"] = _score(
            load_model(trained.path, trust, dtype="float32"), tokenizer, template, eval_set, rows, cfg
        )

    metrics = {
        f"{who}/{name}": value for who, res in results.items() for name, value in res["metrics"].items()
    }
    for name, value in sorted(metrics.items()):
        log.info("[evaluate] %s = %.4f", name, value)
    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        with (tmp / "samples.jsonl").open("w", encoding="utf-8") as handle:
            for i, row in enumerate(rows):
                sample = {
                    "prompt": row["messages"][-2]["content"],
                    "reference": row["messages"][-1]["content"],
                }
                sample.update({who: res["answers"][i] for who, res in results.items()})
                handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
        run_id = trained.metadata.get("mlflow_run_id") if trained else None
        if run_id:
            job = JobRun(cfg, run_id)
            job.metrics({f"eval/{k}": v for k, v in metrics.items()})
            job.artifacts(tmp, "eval")
        artifact = Artifact(
            kind="eval",
            path=str(out),
            fingerprint=fingerprint_path(tmp),
            metadata={"key": key, "metrics": metrics, "samples": len(rows), "mlflow_run_id": run_id},
        )
        write_manifest(tmp, artifact)
    return artifact


def _score(
    model: Any, tokenizer: Any, template: Any, eval_set: Any, rows: list[dict], cfg: PipelineConfig
) -> dict:
    from ftcore.evaluate.generate import generate_answers
    from ftcore.evaluate.loss import eval_loss
    from ftcore.evaluate.metrics import score

    metrics = eval_loss(model, eval_set, tokenizer.pad_token_id, cfg.eval.batch_size) if len(eval_set) else {}
    metrics.pop("eval_tokens", None)
    answers = generate_answers(model, tokenizer, template, rows, cfg.eval.max_new_tokens) if rows else []
    metrics.update(score(answers, [row["messages"][-1]["content"] for row in rows]))
    return {"metrics": metrics, "answers": answers}
