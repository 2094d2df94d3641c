"""Cache keys of the steps, in one place: the steps use them to find finished artifacts, the
Prefect tasks use them as cache keys. A key = what of the config can change the step's result +
its inputs' fingerprints + the step's version (ftcore.step_versions) + the ftflow version.

Keys move exactly when results can: the train and eval rows are fingerprinted separately, so an
eval-only change never retrains; fields that cannot change a result (eval batch size, epochs under
max_steps, LoRA settings of a full fine-tune) stay out; values resolved per machine (bf16) go in
resolved.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ftcore.artifacts import Artifact, compute_key, hash_json
from ftcore.config.pipeline import PipelineConfig
from ftcore.step_versions import STEP_VERSIONS
from ftcore.steps.common import section

SPLITS = ("train", "eval")

# train fields that do not change the trained weights
TRAIN_NOT_IN_KEY = {
    "resume_from_checkpoint",
    "report_to",
    "output_dir",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "keep_checkpoints",  # how many checkpoints are kept after training
    "per_device_eval_batch_size",
    "distributed",  # keyed below as what it changes: the process count and the sharding settings
}

# data fields that do not change tokenized rows: where the files are, how many processes tokenize,
# the template's name (its definition is keyed instead) and the row selection (already part of the
# fetched splits' fingerprints, per split, so choosing other eval rows leaves the train split alone)
DATA_NOT_IN_PREPROCESS_KEY = {
    "dataset_dir",
    "preprocessing_num_workers",
    "template",
    "dataset",
    "eval_dataset",
    "max_samples",
    "val_size",
    "seed",
    "mix_strategy",  # mixing, on_error: part of the fetched splits' fingerprints
    "interleave_probs",
    "on_error",
    "streaming",  # the same tokenized rows, read in order by training (keyed in train_key)
}


# registry fields that do not change what is registered: pointers and the promotion gate
REGISTRY_NOT_IN_KEY = {"tracking_uri", "enabled", "alias", "promote", "gate"}


def step_key(step: str, config: Any, inputs: list[str], extra: Any = None) -> str:
    """compute_key with the step's own version: bumping it invalidates that step's results."""
    return compute_key(step, config, inputs, extra, version=STEP_VERSIONS[step])


def fetch_model_key(cfg: PipelineConfig) -> str:
    """Hub snapshots and built-ins are immutable per reference; a local folder is keyed on its files'
    names, sizes and times (cheap), so editing it re-runs what depends on it."""
    from pathlib import Path

    from ftcore.builtin import BUILTIN_VERSION
    from ftcore.hub import parse_ref

    source, name, _ = parse_ref(cfg.model.name_or_path, cfg.model.revision)
    files: list[str] = [f"builtin-v{BUILTIN_VERSION}"] if source == "builtin" else []
    if source == "local" and Path(name).is_dir():
        files = [
            f"{p.relative_to(name)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(Path(name).rglob("*"))
            if p.is_file()
        ]
    # model.hub is already in name_or_path (a catalogue name became hf: or ms:), so it is not keyed
    return step_key("fetch_model", section(cfg.model, {"adapter_name_or_path", "hub"}), files)


def dataset_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """{"train": fp, "eval": fp} of the rows fetch_dataset makes: each split's source files and
    selection, plus fetch_dataset's version. Cheap: files are hashed, no row is parsed."""
    from ftcore.data.processor import data_kind
    from ftcore.data.splits import split_fingerprints

    raw = split_fingerprints(cfg.data, cfg.resolve_input(cfg.data.dataset_dir), data_kind(cfg.train.stage))
    return {split: step_key("fetch_dataset", {"split": split}, [raw[split]]) for split in SPLITS}


def fetch_dataset_key(cfg: PipelineConfig, fingerprints: dict[str, str] | None = None) -> str:
    """Keyed on the files' content and the row selection: editing a data file re-runs what follows."""
    fps = fingerprints or dataset_fingerprints(cfg)
    return step_key("fetch_dataset", {}, [fps[split] for split in SPLITS])


def template_definition(name: str) -> dict[str, Any]:
    """Everything of a template that changes encoded ids: editing templates.yaml re-tokenizes."""
    from ftcore.data.template import get_template

    template = get_template(name)
    definition = getattr(template, "definition", None)
    return definition() if callable(definition) else dataclasses.asdict(template)


def tokenized_fingerprints(
    cfg: PipelineConfig, model: Artifact, dataset: Artifact, template: str
) -> dict[str, str]:
    """{"train": fp, "eval": fp} of the tokenized splits: that split's rows, the tokenizer, the
    template's definition, the data settings and the preprocess version."""
    settings = {
        "data": section(cfg.data, DATA_NOT_IN_PREPROCESS_KEY),
        "template": template_definition(template),
        "stage": cfg.train.stage,
    }
    tokenizer = model.metadata["tokenizer_fingerprint"]
    return {
        split: step_key(
            "preprocess",
            {**settings, "split": split},
            [tokenizer, dataset.metadata.get(f"{split}_fingerprint", dataset.fingerprint)],
        )
        for split in SPLITS
    }


def preprocess_key(cfg: PipelineConfig, model: Artifact, dataset: Artifact, template: str) -> str:
    fps = tokenized_fingerprints(cfg, model, dataset, template)
    return step_key("preprocess", {}, [fps[split] for split in SPLITS])


def train_section(cfg: PipelineConfig) -> dict[str, Any]:
    """The train settings that can change the trained weights, with bf16 as this machine resolves it."""
    from ftcore.train.sft import resolve_bf16

    train = section(cfg.train, TRAIN_NOT_IN_KEY)
    train["bf16"] = resolve_bf16(cfg.train)
    if cfg.train.max_steps > 0:
        del train["num_train_epochs"]  # max_steps wins
    from ftcore.train.methods import unused_sections

    for name in unused_sections(cfg.train):  # e.g. no lora settings in a full fine-tune's key
        del train[name]
    if cfg.train.stage in ("sft", "pt"):
        train.pop("pref", None)  # preference settings change nothing there
    many = distributed_key(cfg)
    if many is not None:  # one plain process keeps the key it always had
        train["distributed"] = many
    return train


def distributed_key(cfg: PipelineConfig) -> dict[str, Any] | None:
    """How many processes train and how the model is sharded (file contents, not paths); None for one
    plain process. Addresses and ports are not keyed."""
    from ftcore.train.distributed import resolve_distributed, sharding, world_size_of

    d = resolve_distributed(cfg.train.distributed)
    shards = sharding(cfg)
    if world_size_of(d) == 1 and not shards:
        return None
    return {"world_size": world_size_of(d), "timeout": d.ddp_timeout, **shards}


def train_key(cfg: PipelineConfig, model: Artifact, data: Artifact) -> str:
    """The weights depend on the train rows only: a new eval set or eval setting never retrains."""
    config: dict[str, Any] = {"train": train_section(cfg), "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.data.streaming:  # rows in file order instead of shuffled: other batches, other weights
        config["streaming"] = True
    return step_key(
        "train",
        config,
        [
            model.fingerprint,
            data.metadata.get("train_fingerprint", data.fingerprint),
            *continued_adapter_fingerprint(cfg),
        ],
    )


def continued_adapter_fingerprint(cfg: PipelineConfig) -> list[str]:
    """An adapter trained further (train.lora.train_adapter) keys the result by its files."""
    if not (cfg.train.lora.train_adapter and cfg.model.adapter_name_or_path):
        return []
    from ftcore.artifacts import fingerprint_path
    from ftcore.outputs import resolve_adapter_dir

    return [fingerprint_path(resolve_adapter_dir(cfg.model.adapter_name_or_path))]


def eval_dtype(cfg: PipelineConfig) -> str:
    """Evaluation runs in the training precision: bf16 when train.bf16 resolves on, else fp32."""
    from ftcore.train.sft import resolve_bf16

    return "bfloat16" if resolve_bf16(cfg.train) else "float32"


# eval fields that only sampling reads: greedy decoding is keyed without them
EVAL_SAMPLING_ONLY = {"temperature", "top_p", "top_k", "seed"}


def _eval_inputs(cfg: PipelineConfig, data: Artifact) -> dict:
    """What every score of a model on the eval split depends on, besides the model."""
    unused = set() if cfg.eval.do_sample else EVAL_SAMPLING_ONLY
    return {
        # where the benchmarks ran counts, not the URL: eval.endpoint runs are uncached (evaluate_key)
        "eval": section(cfg.eval, {"enabled", "compare_base", "endpoint", "endpoint_model"} | unused),
        "benchmarks_served": bool(cfg.eval.tasks and cfg.eval.endpoint),
        "dtype": eval_dtype(cfg),
        "template": data.metadata.get("template"),
    }


def evaluate_key(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> str:
    """Keyed on the eval split only (data.metadata eval_fingerprint when the tokenized artifact has it):
    what the training data did is in the trained fingerprint already. Benchmarks against eval.endpoint
    are never cached: the model behind a URL can change, so the key is new on every call."""
    import uuid

    eval_data = data.metadata.get("eval_fingerprint", data.fingerprint)
    inputs = [model.fingerprint, eval_data, trained.fingerprint if trained else "base-only"]
    served = uuid.uuid4().hex if cfg.eval.tasks and cfg.eval.endpoint else None
    config = {**_eval_inputs(cfg, data), "compare_base": cfg.eval.compare_base}
    return step_key("evaluate", config, inputs, extra=served)


def eval_identity(cfg: PipelineConfig, data: Artifact) -> dict[str, str]:
    """What makes two models' scores comparable: the tokenized eval split and the settings that score
    it. Recorded on each registered version, so promotion never compares scores from different sets."""
    return {
        "eval_fingerprint": data.metadata.get("eval_fingerprint", data.fingerprint),
        "eval_config": hash_json(_eval_inputs(cfg, data)),
    }


def evaluate_base_key(cfg: PipelineConfig, model: Artifact, data: Artifact) -> str:
    """The base model's scores: shared by every job on the same base model, eval split and eval
    settings, whatever they train (learning rate, method, training data)."""
    eval_data = data.metadata.get("eval_fingerprint", data.fingerprint)
    return compute_key(
        "evaluate_base",
        _eval_inputs(cfg, data),
        [model.fingerprint, eval_data],
        version=STEP_VERSIONS["evaluate"],
    )


# the export fields that change the merged weights; the rest of the export section (the folder, the
# Hub target, the quantize step's settings) never re-merges
MERGE_FIELDS = ("merge", "export_size", "export_device", "export_legacy_format", "dtype")


def merge_weights_key(cfg: PipelineConfig, model: Artifact, trained: Artifact) -> str:
    """What the merged weights depend on: the base, the adapter and the merge settings."""
    settings = {name: getattr(cfg.export, name) for name in MERGE_FIELDS}
    return step_key("merge", settings, [model.fingerprint, trained.fingerprint])


def merge_key(
    cfg: PipelineConfig, model: Artifact, trained: Artifact, evaluation: Artifact | None = None
) -> str:
    """The merged folder's key: its weights plus the eval scores its model card shows. A new eval
    only rewrites the card (ftcore.steps.merge), the weights are kept."""
    weights = merge_weights_key(cfg, model, trained)
    return step_key("merge", {}, [weights, evaluation.fingerprint if evaluation else "not-evaluated"])


def quantize_key(cfg: PipelineConfig, merged: Artifact, tokenized: Artifact | None) -> str:
    """The resolved quantization settings, the merged model and the calibration data (only for the
    methods that calibrate: bnb nf4 is the same whatever the data)."""
    import dataclasses

    from ftcore.export import quantizers
    from ftcore.export.quantizers import calibration

    q = quantizers.resolve(cfg.export)
    settings = dataclasses.asdict(q)
    inputs = [merged.fingerprint]
    if q.needs_calibration:
        inputs.append(calibration.fingerprint(cfg, tokenized))
    else:  # no calibration: these cannot change the result
        for name in ("group_size", "nsamples", "maxlen", "dataset"):
            settings.pop(name)
    return step_key("quantize", {**settings, "trust_remote_code": cfg.model.trust_remote_code}, inputs)


def register_key(
    cfg: PipelineConfig,
    merged: Artifact,
    evaluation: Artifact | None,
    tracking_uri: str,
    quantized: Artifact | None = None,
) -> str:
    """The alias is not in the key: moving it is a pointer move (register.assign_alias), not a version."""
    inputs = [merged.fingerprint, evaluation.fingerprint if evaluation else ""]
    if quantized is not None:  # keys of versions without a quantized export stay as they were
        inputs.append(quantized.fingerprint)
    return step_key("register", section(cfg.registry, REGISTRY_NOT_IN_KEY), inputs, extra=tracking_uri)
