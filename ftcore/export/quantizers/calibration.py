"""Calibration texts for GPTQ-style quantizers: one JSON line {"text": ...} per sample.

Default: the job's own training rows as the model saw them (token ids decoded, chat template and all),
so the quantizer calibrates on the distribution the model was tuned for. Else
`export.export_quantization_dataset`: a dataset of data.dataset_dir's dataset_info.json (rendered with
the merged model's chat template), or a .txt (a text per line) / .jsonl ({"text": ...}) file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftcore.artifacts import Artifact, fingerprint_file, hash_json
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError, DataError

KEY = "export.export_quantization_dataset"


def _source(cfg: PipelineConfig) -> tuple[str, Any]:
    """('tokenized', None) | ('file', path) | ('dataset', name): where the calibration texts come from."""
    name = cfg.export.export_quantization_dataset
    if not name:
        return "tokenized", None
    if name.endswith((".txt", ".jsonl")):
        path = cfg.resolve_input(name)
        if not path.is_file():
            raise ConfigError(f"{KEY}: file {path} does not exist")
        return "file", path
    from ftcore.data.loader import dataset_entry

    dataset_entry(cfg.resolve_input(cfg.data.dataset_dir), name)  # an unknown name fails, listing the known
    return "dataset", name


def check_quantization(cfg: PipelineConfig) -> None:
    """Preflight: the quantization settings work together and the calibration source exists."""
    from ftcore.export import quantizers

    quantizers.check(cfg.export, side_env=False)
    if quantizers.resolve(cfg.export).needs_calibration:
        _source(cfg)
    quantizers.check(cfg.export)  # the side environment last: the config's own errors come first


def fingerprint(cfg: PipelineConfig, tokenized: Artifact | None) -> str:
    """What the calibration texts depend on, known before they are made (part of the quantize key)."""
    kind, value = _source(cfg)
    if kind == "tokenized":
        if tokenized is None:
            raise ConfigError(f"{KEY} is unset and no tokenized training rows were made to calibrate on")
        return hash_json(["tokenized", tokenized.metadata.get("train_fingerprint", tokenized.fingerprint)])
    if kind == "file":
        return hash_json(["file", fingerprint_file(value)])
    from ftcore.data.loader import dataset_files

    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    return hash_json(["dataset", value, [fingerprint_file(f) for f in dataset_files(dataset_dir, value)]])


def write_texts(
    cfg: PipelineConfig, tokenized: Artifact | None, model_dir: Path, nsamples: int, out: Path
) -> int:
    """Write up to `nsamples` calibration texts to `out` (JSONL); returns how many. None is an error."""
    from ftcore.modeling import load_tokenizer

    kind, value = _source(cfg)
    tokenizer = load_tokenizer(model_dir, cfg.model.trust_remote_code)
    if kind == "tokenized":
        import datasets

        rows = datasets.load_from_disk(str(Path(tokenized.path) / "train"))
        rows = rows.select(range(min(nsamples, len(rows))))
        texts = [tokenizer.decode(ids) for ids in rows["input_ids"]]
    elif kind == "file":
        texts = _file_texts(value, nsamples)
    else:
        from ftcore.data.loader import load_rows

        texts = []
        for row in load_rows(cfg.resolve_input(cfg.data.dataset_dir), value, nsamples):
            system = [{"role": "system", "content": row["system"]}] if row.get("system") else []
            texts.append(tokenizer.apply_chat_template(system + row["messages"], tokenize=False))
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{KEY}: no calibration text found ({value or 'the training rows'})")
    with out.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return len(texts)


def _file_texts(path: Path, nsamples: int) -> list[str]:
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if len(texts) >= nsamples:
                break
            if not line.strip():
                continue
            if path.suffix == ".txt":
                texts.append(line.rstrip("\n"))
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f'{path}:{number}: expected an object with a string "text" field')
            texts.append(record["text"])
    return texts
