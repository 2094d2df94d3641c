"""quantize: the merged model -> a quantized export (llm-compressor, gptqmodel or bitsandbytes nf4)."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.config.loader import dump_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError
from ftcore.export import quantizers
from ftcore.export.quantizers import calibration
from ftcore.steps.common import reuse, step_dir
from ftcore.steps.keys import quantize_key
from ftcore.steps.merge import LINEAGE, write_docs

log = logging.getLogger("ftcore.steps")


def quantize(cfg: PipelineConfig, merged: Artifact, tokenized: Artifact | None) -> Artifact:
    """Quantize the merged model into <workdir>/quantized-<key> (or <export_dir>-<method><bit>)."""
    if merged.kind != "merged":
        raise ConfigError(
            "export.export_quantization_method: only a merged model can be quantized, got an unmerged "
            f"{merged.kind} ({merged.path}): set export.merge: true (merge first, then quantize)"
        )
    quantizers.check(cfg.export)
    q = quantizers.resolve(cfg.export)
    key = quantize_key(cfg, merged, tokenized)
    chosen = cfg.export.export_dir
    name = f"{q.method}-{q.scheme or f'{q.bit}bit'}".lower()
    out = step_dir(cfg, "quantized", key, f"{chosen.rstrip('/')}-{name}" if chosen else None)
    done = reuse(out, key, "quantize")
    if done is not None:
        return done
    started = time.monotonic()
    model_dir = Path(merged.path)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".tmp-calib-", dir=out.parent) as work:
        calib = None
        if q.needs_calibration:
            calib = Path(work) / "calibration.jsonl"
            count = calibration.write_texts(cfg, tokenized, model_dir, q.nsamples, calib)
            log.info("[quantize] %s calibrates on %d texts", q.method, count)
        log_path = cfg.workdir_path / "logs" / f"quantize-{key[:12]}.log"
        quantizers.quantize_model(q, model_dir, tmp, calib, log_path, cfg.model.trust_remote_code)
        (tmp / "ftflow_config.yaml").write_text(dump_config(cfg))
        lineage = {k: merged.metadata.get(k) for k in LINEAGE}
        settings = {"quantization": f"{q.method} {q.scheme or f'{q.bit}-bit'}", "quantized_from": merged.path}
        write_docs(tmp, cfg, {**lineage, "adapter_path": merged.metadata.get("adapter_path")}, None, settings)
        artifact = Artifact(
            kind="quantized",
            path=str(out),
            fingerprint=fingerprint_path(tmp),
            metadata={
                "key": key,
                "merged_path": merged.path,
                "method": q.method,
                "bit": q.bit,
                "scheme": q.scheme,
                "group_size": q.group_size,
                "seconds": round(time.monotonic() - started, 1),
                "tags": q.tags(),
            },
        )
        write_manifest(tmp, artifact)
    log.info("[quantize] %s %s export written to %s", q.method, q.scheme or f"{q.bit}-bit", out)
    return artifact
