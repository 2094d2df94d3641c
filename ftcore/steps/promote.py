"""promote: the pipeline's last step when registry.promote is on: the gate on the version just registered.

An action, not a cached result: the champion may have moved since the last run, so the gate runs on
every pipeline run. A failed or refused gate is a normal outcome (the version stays a candidate), not
a failed step; the decision and its reason are in the artifact's metadata, the version's tags and the
markdown report in its MLflow run.
"""

from __future__ import annotations

import logging

from ftcore.artifacts import Artifact, hash_json
from ftcore.config.pipeline import PipelineConfig

log = logging.getLogger("ftcore.steps")


def promote(cfg: PipelineConfig, registered: Artifact) -> Artifact:
    """The gate on the version just registered: champion when registry.gate passes against the champion
    (or the base model)."""
    from ftcore.promote import promote_version

    meta = registered.metadata
    decision = promote_version(cfg, version=meta["version"], tracking_uri=meta["tracking_uri"])
    log.info("[promote] %s", decision.reason)
    metadata = decision.metadata()
    return Artifact(
        kind="promotion",
        path=f"models:/{decision.model_name}/{decision.version}",
        fingerprint=hash_json(metadata),
        metadata=metadata,
    )
