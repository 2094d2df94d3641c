"""push: the export folder to the Hugging Face Hub (export.export_hub_model_id), in one commit.

An action like `alias`, not a cached result: the Hub repo can change behind ftflow's back, and a push
of an unchanged folder is a cheap no-op commit on the Hub's side.
"""

from __future__ import annotations

from ftcore.artifacts import Artifact
from ftcore.config.pipeline import PipelineConfig


def push(cfg: PipelineConfig, merged: Artifact, quantized: Artifact | None = None) -> Artifact:
    """Upload the quantized export when there is one, else the merged (or full fine-tuned) model
    folder; the artifact's path is the commit URL."""
    from ftcore.export.push import push_folder

    source = quantized or merged
    repo_id = cfg.export.export_hub_model_id or ""
    url = push_folder(source.path, repo_id, cfg.export.export_hub_private)
    return Artifact(
        kind="pushed",
        path=url,
        fingerprint=source.fingerprint,
        metadata={"repo_id": repo_id, "source": source.path},
    )
