"""preprocess: rows -> chat template -> token ids and prompt-masked labels, cached by fingerprint.

The cache lives in FTFLOW_HOME/tokenized/<key>, shared by every job with the same data, tokenizer,
template and data settings, so a new experiment on the same data never re-tokenizes.
"""

from __future__ import annotations

import json
import logging

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.builtin import ftflow_home
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError
from ftcore.stages.common import reuse
from ftcore.stages.keys import preprocess_key

log = logging.getLogger("ftcore.stages")


def resolve_template(cfg: PipelineConfig, model: Artifact) -> str:
    """data.template when given, else the model's own (built-in marker or config.json model_type)."""
    from ftcore.data.template import get_template

    name = cfg.data.template or model.metadata.get("template")
    if not name:
        raise ConfigError(
            f"data.template is not set and no template is known for model '{model.metadata.get('ref')}': "
            "set data.template (e.g. qwen, llama3, chatml)"
        )
    get_template(name)  # unknown names fail here, naming the template
    return name


def preprocess(cfg: PipelineConfig, model: Artifact, dataset: Artifact) -> Artifact:
    """Tokenize the train and eval splits for the configured stage; reuse an identical earlier run."""
    import datasets

    from ftcore.data.processor import PROCESSORS
    from ftcore.data.splits import build_splits
    from ftcore.data.template import get_template
    from ftcore.modeling import load_tokenizer

    template_name = resolve_template(cfg, model)
    get_template(template_name).check_tokenizer(load_tokenizer(model.path, cfg.model.trust_remote_code))
    key = preprocess_key(cfg, model, dataset, template_name)
    out = ftflow_home() / "tokenized" / key[:16]
    done = reuse(out, key, "preprocess")
    if done is not None:
        return done

    tokenizer = load_tokenizer(model.path, cfg.model.trust_remote_code)
    template = get_template(template_name)
    process = PROCESSORS[cfg.train.stage]
    splits = build_splits(cfg.data, cfg.resolve_input(cfg.data.dataset_dir))
    counts = {}
    with atomic_dir(out) as tmp:
        for split in ("train", "eval"):
            features = process(
                splits[split], tokenizer, template, cfg.data.cutoff_len, cfg.data.train_on_prompt
            )
            datasets.Dataset.from_dict(features).save_to_disk(str(tmp / split))
            counts[split] = len(features["input_ids"])
        with (tmp / "eval_rows.jsonl").open("w", encoding="utf-8") as handle:
            for row in splits["eval"]:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        artifact = Artifact(
            kind="tokenized",
            path=str(out),
            fingerprint=fingerprint_path(tmp),
            metadata={
                "key": key,
                "template": template_name,
                "dataset_fingerprint": dataset.fingerprint,
                "train_examples": counts["train"],
                "eval_examples": counts["eval"],
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
