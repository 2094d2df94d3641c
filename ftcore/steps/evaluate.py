"""evaluate: held-out loss, perplexity and generation metrics of the base and the fine-tuned model.

Both run in the training precision. The base model's scores depend only on the base model, the eval
split and the eval settings, so they live in their own cache, FTFLOW_HOME/eval-base/<key>, and a sweep
over learning rates scores the base once; each job's eval artifact still holds base and tuned.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, read_manifest, write_manifest
from ftcore.builtin import ftflow_home
from ftcore.config.pipeline import PipelineConfig
from ftcore.evaluate.compare import eval_report
from ftcore.steps.common import JobRun, reuse, step_dir
from ftcore.steps.keys import eval_dtype, eval_identity, evaluate_base_key, evaluate_key

log = logging.getLogger("ftcore.steps")

COMPARISON = "comparison.md"  # the step's markdown (Step.markdown): shown in MLflow and the Prefect UI


@dataclass
class _EvalData:
    """The eval split as the scorers take it: tokenized rows for the loss, conversations to answer."""

    tokenized: Any
    rows: list[dict]
    template: Any
    pad_token_id: int


def evaluate(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> Artifact:
    """Score base (if compare_base) and fine-tuned model; metrics.json, samples.jsonl (answers and
    per-sample scores), comparison.md (base / champion / candidate), all logged to the job's MLflow run."""
    key = evaluate_key(cfg, model, data, trained)
    out = step_dir(cfg, "eval", key)
    done = reuse(out, key, "evaluate")
    if done is not None:
        return done

    from ftcore.evaluate import benchmarks
    from ftcore.modeling import load_model, load_tokenizer
    from ftcore.train import HEADS

    head = HEADS.get(cfg.train.stage, "causal_lm")  # rm: the score-head model

    benchmarks.check_tasks(cfg.eval.tasks)  # unknown names, hub data offline: before any model loads
    trust = cfg.model.trust_remote_code
    dtype = eval_dtype(cfg)
    base_tokenizer = load_tokenizer(model.path, trust)
    eval_data = _load_eval_data(cfg, data, base_tokenizer.pad_token_id)
    results: dict[str, dict[str, Any]] = {}
    base_model = None
    if trained is None or cfg.eval.compare_base:
        base_key = evaluate_base_key(cfg, model, data)
        base_dir = ftflow_home() / "eval-base" / base_key[:16]
        cached = _cached_base(base_dir, base_key)
        if cached is None:
            base_model = _load(model.path, trust, dtype, head, cfg.train.seed)
            base_scores = _score("base", base_model, base_tokenizer, eval_data, cfg)
            cached = _save_base(base_dir, base_key, base_scores, dtype)
        results["base"] = cached
    if trained is not None:
        if trained.kind == "adapter":
            from peft import PeftModel

            base_model = (
                base_model
                if base_model is not None
                else _load(model.path, trust, dtype, head, cfg.train.seed)
            )
            tuned, tokenizer = PeftModel.from_pretrained(base_model, trained.path), base_tokenizer
            tuned.eval()
        else:
            base_model = None  # free the base before loading a second full model
            tuned = load_model(trained.path, trust, dtype=dtype, head=head)
            tokenizer = load_tokenizer(trained.path, trust)
        results["tuned"] = _score("tuned", tuned, tokenizer, eval_data, cfg)
    served = benchmarks.served(cfg, [trained.path] if trained else [], model.path)

    metrics = {
        f"{who}/{name}": value for who, res in results.items() for name, value in res["metrics"].items()
    }
    metrics.update({f"served/{name}": value for name, value in (served or {}).get("metrics", {}).items()})
    for name, value in sorted(metrics.items()):
        log.info("[evaluate] %s = %.4f", name, value)
    identity = eval_identity(cfg, data)
    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        benchmarks.write_results(tmp, {**results, "served": served})
        _write_samples(tmp / "samples.jsonl", eval_data.rows, results)
        scores = {who: res["metrics"] for who, res in results.items()}
        report = eval_report(cfg, identity, scores, len(eval_data.rows))
        (tmp / COMPARISON).write_text(report, encoding="utf-8")
        run_id = trained.metadata.get("mlflow_run_id") if trained else None
        if run_id:
            job = JobRun(cfg, run_id)
            job.metrics({f"eval/{k}": v for k, v in metrics.items()})
            job.artifacts(tmp, "eval")
            job.describe(report)
        artifact = Artifact(
            kind="eval",
            path=str(out),
            fingerprint=fingerprint_path(tmp),
            metadata={
                "key": key,
                "metrics": metrics,
                "samples": len(eval_data.rows),
                "dtype": dtype,
                "base_scores": results["base"].get("path") if "base" in results else None,
                "mlflow_run_id": run_id,
                **identity,  # registered as lineage: promotion compares like with like
            },
        )
        write_manifest(tmp, artifact)
    return artifact


def _load(path: str, trust: bool, dtype: str, head: str, seed: int) -> Any:
    """The base model; a score head starts as training started it (same seed), so the base's pairwise
    scores are those of the untrained reward model."""
    from transformers import set_seed

    from ftcore.modeling import load_model

    if head == "score":
        set_seed(seed)
    return load_model(path, trust, dtype=dtype, head=head)


def _load_eval_data(cfg: PipelineConfig, data: Artifact, pad_token_id: int) -> _EvalData:
    import datasets

    from ftcore.data.template import get_template

    tokenized = datasets.load_from_disk(str(Path(data.path) / "eval"))
    if cfg.eval.max_samples:
        tokenized = tokenized.select(range(min(cfg.eval.max_samples, len(tokenized))))
    from ftcore.evaluate.pairwise import is_preference_set

    lines = (Path(data.path) / "eval_rows.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line][: cfg.eval.generation_samples]
    if is_preference_set(tokenized):
        rows = []  # preference stages are scored on pairs (pairwise accuracy, margins), not answers
    return _EvalData(tokenized, rows, get_template(data.metadata["template"]), pad_token_id)


def _score(who: str, model: Any, tokenizer: Any, data: _EvalData, cfg: PipelineConfig) -> dict:
    """Loss / perplexity on the tokenized split and answers to the first generation_samples rows."""
    from ftcore.evaluate import benchmarks
    from ftcore.evaluate.generate import generate_answers, generation_options
    from ftcore.evaluate.loss import eval_loss
    from ftcore.evaluate.metrics import score
    from ftcore.evaluate.progress import Progress

    size = cfg.eval.batch_size
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    log.info(
        "[evaluate] %s: loss on %d examples, answers to %d prompts, batches of %d, %s",
        who,
        len(data.tokenized),
        len(data.rows),
        size,
        dtype,
    )
    from ftcore.evaluate.pairwise import preference_metrics

    metrics: dict[str, float] = {}
    preference = (
        preference_metrics(model, data.tokenized, data.pad_token_id, size) if len(data.tokenized) else None
    )
    if preference is not None:
        metrics = preference
    elif len(data.tokenized):
        progress = Progress(log, f"[evaluate] {who}: loss batch")
        metrics = eval_loss(model, data.tokenized, data.pad_token_id, size, progress=progress)
        metrics.pop("eval_tokens", None)
    answers: list[str] = []
    if data.rows:
        progress = Progress(log, f"[evaluate] {who}: generating")
        answers = generate_answers(
            model,
            tokenizer,
            data.template,
            data.rows,
            cfg.eval.max_new_tokens,
            size,
            progress=progress,
            options=generation_options(cfg.eval),
            seed=cfg.eval.seed if cfg.eval.do_sample else None,
        )
    if data.rows:
        metrics.update(score(answers, [row["messages"][-1]["content"] for row in data.rows]))
    bench = benchmarks.in_process(who, model, tokenizer, cfg)
    metrics.update(bench.get("metrics", {}))
    return {"metrics": metrics, "answers": answers, "benchmarks": bench.get("results")}


def _write_samples(path: Path, rows: list[dict], results: dict[str, dict]) -> None:
    """One JSON line per generated answer: prompt, reference, each model's answer and its scores."""
    from ftcore.evaluate.metrics import per_sample

    references = [row["messages"][-1]["content"] for row in rows]
    scores = {who: per_sample(res["answers"], references) for who, res in results.items()}
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            sample: dict[str, Any] = {"prompt": row["messages"][-2]["content"], "reference": references[i]}
            sample.update({who: res["answers"][i] for who, res in results.items()})
            sample["scores"] = {who: values[i] for who, values in scores.items()}
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")


def _cached_base(directory: Path, key: str) -> dict | None:
    """The base model's scores from an earlier job with the same base key, if finished."""
    done = read_manifest(directory)
    if done is None or done.metadata.get("key") != key:
        return None
    try:
        answers = json.loads((directory / "answers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("[evaluate] base: cached scores in %s are incomplete; scoring again", directory)
        return None
    log.info("[evaluate] base: reusing scores from %s", directory)
    bench = directory / "benchmarks.json"
    results = json.loads(bench.read_text(encoding="utf-8"))["base"] if bench.is_file() else None
    metrics = done.metadata["metrics"]
    return {"metrics": metrics, "answers": answers, "path": str(directory), "benchmarks": results}


def _save_base(directory: Path, key: str, result: dict, dtype: str) -> dict:
    """Store the base model's scores for every later job that evaluates against the same base."""
    from ftcore.evaluate import benchmarks

    with atomic_dir(directory) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result["metrics"], indent=2, sort_keys=True))
        (tmp / "answers.json").write_text(json.dumps(result["answers"], ensure_ascii=False, indent=1))
        benchmarks.write_results(tmp, {"base": result})
        artifact = Artifact(
            kind="eval-base",
            path=str(directory),
            fingerprint=fingerprint_path(tmp),
            metadata={"key": key, "metrics": result["metrics"], "dtype": dtype},
        )
        write_manifest(tmp, artifact)
    return {**result, "path": str(directory)}
