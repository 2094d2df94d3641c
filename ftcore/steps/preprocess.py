"""preprocess: rows -> chat template -> token ids and prompt-masked labels, cached by fingerprint.

The cache lives in FTFLOW_HOME/tokenized/<key>, shared by every job with the same data, tokenizer,
template and data settings, so a new experiment on the same data never re-tokenizes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ftcore.artifacts import Artifact, atomic_dir, output_fingerprint, write_manifest
from ftcore.builtin import ftflow_home
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError, DataError
from ftcore.steps.common import reuse
from ftcore.steps.keys import preprocess_key, tokenized_fingerprints

log = logging.getLogger("ftcore.steps")
AUTO = "auto"  # data.template: infer it from the model (as when unset)


def resolve_template(cfg: PipelineConfig, model: Artifact) -> str:
    """data.template when given, else (unset or `auto`) the model's own, found and logged by
    ftcore.data.template_auto; with data.enable_thinking false, a reasoning template's thinking-off
    variant."""
    from ftcore.data.template import get_template, list_templates
    from ftcore.data.template_auto import auto_template

    name = cfg.data.template
    if name in (None, AUTO):
        choice = auto_template(model.path, model.metadata.get("ref"))
        log.info(
            "[preprocess] data.template %s: '%s', because %s", name or "unset", choice.name, choice.reason
        )
        name = choice.name
    template = get_template(name)  # unknown names fail here, naming the template
    if cfg.data.enable_thinking is False and template.thinking is not None and template.thinking.enabled:
        # LLaMA-Factory's enable_thinking: false on a reasoning template is its thinking-off variant,
        # by name, so training, evaluation and the served chat template all agree
        off = f"{name}_nothink"
        if off not in list_templates():
            raise ConfigError(
                f"data.enable_thinking=false: template '{name}' has no thinking-off variant ('{off}')"
            )
        return off
    return name


def preprocess(cfg: PipelineConfig, model: Artifact, dataset: Artifact) -> Artifact:
    """Tokenize the train and eval splits for the configured step; reuse an identical earlier run.

    Rows come from fetch_dataset's Arrow splits; `datasets.map` tokenizes them in batches, in
    data.preprocessing_num_workers processes (same ids for any number of processes).
    """
    import datasets

    from ftcore.data.processor import PROCESSORS, ProcessContext, data_kind, tokenize_split
    from ftcore.data.splits import save_split
    from ftcore.data.template import RESPONSE_ROLES, get_template
    from ftcore.modeling import load_tokenizer

    template_name = resolve_template(cfg, model)
    tokenizer = load_tokenizer(model.path, cfg.model.trust_remote_code)
    template = get_template(template_name)
    # before the cache lookup: a result cached under a template the tokenizer cannot encode is garbage too
    template.check_tokenizer(tokenizer)
    fingerprints = tokenized_fingerprints(cfg, model, dataset, template_name)
    key = preprocess_key(cfg, model, dataset, template_name)
    out = ftflow_home() / "tokenized" / key[:16]
    done = reuse(out, key, "preprocess")
    if done is not None:
        return done

    counts, dropped = {}, {}
    ctx = ProcessContext(tokenizer, template, cfg.data.cutoff_len, cfg.data)
    with atomic_dir(out) as tmp:
        for split in ("train", "eval"):
            rows = datasets.load_from_disk(str(Path(dataset.path) / split))
            tokenized = tokenize_split(
                rows,
                cfg.train.stage,
                ctx,
                num_proc=cfg.data.preprocessing_num_workers,
                work_dir=tmp / f".map-{split}",
                fingerprint=fingerprints[split][:32],
            )
            if split == "train" and len(rows) and not len(tokenized):
                raise DataError(
                    f"data.cutoff_len={cfg.data.cutoff_len}: none of the {len(rows)} training rows keeps a "
                    f"response token within it ({', '.join(cfg.data.dataset)}); raise cutoff_len"
                    if cfg.train.stage != "pt"
                    else f"data.cutoff_len={cfg.data.cutoff_len}: the {len(rows)} training rows hold fewer "
                    f"tokens than one block ({', '.join(cfg.data.dataset)}); lower cutoff_len or add text"
                )
            save_split(tokenized, tmp / split)
            counts[split] = len(tokenized)
            if not PROCESSORS[data_kind(cfg.train.stage)].whole_batch:  # pt / kto rows are not 1:1
                dropped[split] = len(rows) - len(tokenized)
            del tokenized
            shutil.rmtree(tmp / f".map-{split}", ignore_errors=True)
            if split == "eval":  # the rows evaluation answers: those that end on a reference reply
                with (tmp / "eval_rows.jsonl").open("w", encoding="utf-8") as handle:
                    for row in rows:
                        if cfg.train.stage != "pt" and row["messages"][-1]["role"] in RESPONSE_ROLES:
                            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        artifact = Artifact(
            kind="tokenized",
            path=str(out),
            fingerprint=output_fingerprint(key, tmp),
            metadata={
                "key": key,
                "template": template_name,
                "dataset_fingerprint": dataset.fingerprint,
                "train_fingerprint": fingerprints["train"],
                "eval_fingerprint": fingerprints["eval"],
                "train_examples": counts["train"],
                "eval_examples": counts["eval"],
                # rows with no response token left within cutoff_len (logged as they are dropped)
                "dropped_rows": dropped,
                "cutoff_len": cfg.data.cutoff_len,
            },
        )
        write_manifest(tmp, artifact)
    log.info(
        "[preprocess] %d train / %d eval examples, template %s",
        counts["train"],
        counts["eval"],
        template_name,
    )
    return artifact
