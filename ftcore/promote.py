"""Promotion: the gate that moves the `champion` alias to a candidate version, and rollback.

The gate compares the candidate's scores with the champion's (or, when there is no champion yet, with
the base model's scores recorded beside the candidate's), rule by rule as `registry.gate` says. Scores
are the `metric.tuned/*` and `metric.base/*` tags the register step writes; the `ftflow.eval_fingerprint`
and `ftflow.eval_config` tags say which eval set and settings produced them, and versions whose scores
came from different ones are never compared. Every decision is written back as tags on the candidate
(`ftflow.promotion.result|reason|compared_with|at`) and as a markdown report in its MLflow run; every
champion move (promotion or rollback) is appended to the registered model's `ftflow.champion_history`
tag, from which rollback knows the version the champion pointed to before.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ftcore import registry, tracking
from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import GateRule
from ftcore.errors import ConfigError, ModelNotAvailableError
from ftcore.evaluate.compare import Column, comparison_table, recorded_scores

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger("ftcore.promote")

PROMOTION_TAG = "ftflow.promotion."  # + result, reason, compared_with, at (on the candidate version)
PASSED, FAILED, REFUSED, NOOP = "passed", "failed", "refused", "already champion"


class _Refused(Exception):
    """The versions cannot be compared (different eval sets, missing scores): the reason says why."""


@dataclass
class RuleCheck:
    """One gate rule applied: the two values, the improvement in the better direction, the verdict."""

    metric: str
    direction: str
    candidate: float
    reference: float
    improvement: float  # > 0: candidate better; a fraction of the reference when relative
    required: float
    relative: bool
    passed: bool

    def describe(self) -> str:
        unit = "%" if self.relative else ""
        scale = 100.0 if self.relative else 1.0
        need = "not worse" if self.required == 0 else f">= {self.required * scale:.4g}{unit} better"
        return (
            f"{self.metric} {self.candidate:.6g} vs {self.reference:.6g} ({self.direction} is better): "
            f"{self.improvement * scale:+.4g}{unit}, needed {need}: {'pass' if self.passed else 'FAIL'}"
        )


@dataclass
class Decision:
    """What `promote_version` decided and why; `metadata()` is what the promote step's artifact holds."""

    model_name: str
    version: int
    result: str  # passed | failed | refused | already champion
    reason: str
    compared_with: str = ""
    at: str = ""
    champion_before: int | None = None
    checks: list[RuleCheck] = field(default_factory=list)
    report: str = ""

    @property
    def promoted(self) -> bool:
        return self.result == PASSED

    def metadata(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted}


def check_config(cfg: PipelineConfig) -> None:
    """Preflight: a gate that could never be applied fails before training, not after it."""
    if cfg.registry.enabled and cfg.registry.promote and not cfg.eval.enabled:
        raise ConfigError(
            "registry.promote: the gate compares evaluation scores, but eval.enabled is false; "
            "turn evaluation on or promote by hand"
        )


def check_rule(rule: GateRule, candidate: float, reference: float) -> RuleCheck:
    """Apply one rule: the improvement over the reference in the better direction against the margin."""
    diff = reference - candidate if rule.direction == "lower" else candidate - reference
    if rule.relative:
        diff = diff / abs(reference) if reference else (0.0 if diff == 0 else float("inf") * diff)
    return RuleCheck(
        metric=rule.metric,
        direction=rule.direction,
        candidate=candidate,
        reference=reference,
        improvement=diff,
        required=rule.min_improvement,
        relative=rule.relative,
        passed=diff >= rule.min_improvement - 1e-12,  # tags keep 6 digits: equal means equal
    )


def scores(version: ModelVersion, who: str) -> dict[str, float]:
    """The `who` ("tuned" or "base") metrics recorded on a version, by plain metric name."""
    return recorded_scores(version.tags, who)


def promote_version(
    cfg: PipelineConfig, version: int | None = None, tracking_uri: str | None = None
) -> Decision:
    """Run the gate on `version` (default: the one `registry.alias` points at) and move `champion` to
    it when every rule passes. Promoting the champion itself changes nothing and says so."""
    uri = tracking_uri or tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    client = open_registry(uri)
    name = cfg.registry.model_name
    candidate = _candidate(client, cfg, uri, version)
    number = int(candidate.version)
    champion = registry.get_version_by_alias(client, name, registry.CHAMPION)
    at = _now()
    if champion is not None and int(champion.version) == number:
        reason = f"version {number} is already champion: nothing to do"
        decision = Decision(name, number, NOOP, reason, f"champion:{number}", at, number)
        decision.report = _report(decision, candidate, champion)
        return decision
    before = int(champion.version) if champion is not None else None
    try:
        reference, label, compared_with = _reference(candidate, champion)
        checks = _checks(cfg.registry.gate, scores(candidate, "tuned"), reference, number, label)
    except _Refused as refused:
        decision = Decision(
            name, number, REFUSED, str(refused), _describe_ref(champion, candidate), at, before
        )
    else:
        failed = [check for check in checks if not check.passed]
        if failed:
            reason = f"failed {len(failed)} of {len(checks)} rules against {label}: " + "; ".join(
                check.describe() for check in failed
            )
            decision = Decision(name, number, FAILED, reason, compared_with, at, before, checks)
        else:
            reason = f"passed {len(checks)} rules against {label}: " + "; ".join(c.describe() for c in checks)
            decision = Decision(name, number, PASSED, reason, compared_with, at, before, checks)
            registry.move_champion(client, name, number, "promote", at)
    decision.report = _report(decision, candidate, champion)
    _record(client, candidate, decision)
    log.info("[promote] %s version %s: %s: %s", name, number, decision.result, decision.reason)
    return decision


def open_registry(uri: str) -> MlflowClient:
    """A client on an existing store: a sqlite store that is not there is an error, never created."""
    db = tracking.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ModelNotAvailableError(f"registry: no MLflow store at {db}; run the job first (`ft run CFG`)")
    return tracking.get_client(uri)


def _candidate(client: MlflowClient, cfg: PipelineConfig, uri: str, version: int | None) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    name = cfg.registry.model_name
    if version is not None:
        try:
            return client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise ModelNotAvailableError(
                f"registry: {name} version {version} does not exist in {uri}"
            ) from exc
    alias = cfg.registry.alias
    if not alias or alias == registry.CHAMPION:
        raise ConfigError(
            f"registry.alias: '{alias}' cannot name the candidate; promotion moves '{registry.CHAMPION}' "
            "to the version another alias (candidate) points at"
        )
    found = registry.get_version_by_alias(client, name, alias)
    if found is None:
        raise ModelNotAvailableError(
            f"registry: {registry.model_uri(name, alias)} does not exist in {uri}; "
            "run the job first (`ft run CFG`) so it registers a candidate"
        )
    return found


def _reference(candidate: ModelVersion, champion: ModelVersion | None) -> tuple[dict[str, float], str, str]:
    """(reference scores, label, compared_with tag): the champion's when there is one, else the base's."""
    number = candidate.version
    if champion is None:
        base = scores(candidate, "base")
        if not base:
            raise _Refused(
                f"there is no champion yet and version {number} has no base-model scores to compare "
                "with (its job ran with eval.enabled or eval.compare_base off)"
            )
        model = candidate.tags.get(f"{registry.TAG_PREFIX}base_model", "")
        return base, f"the base model {model}".rstrip(), f"base:{model}"
    for tag, what in (
        (registry.EVAL_FINGERPRINT_TAG, "eval set"),
        (registry.EVAL_CONFIG_TAG, "eval settings"),
    ):
        mine, theirs = candidate.tags.get(tag), champion.tags.get(tag)
        for who, value in (
            (f"candidate version {number}", mine),
            (f"champion version {champion.version}", theirs),
        ):
            if not value:
                raise _Refused(
                    f"{who} records no {what} fingerprint ({tag}): it was registered without evaluation "
                    "or by an older ftflow, so its scores cannot be matched; evaluate it again"
                )
        if mine != theirs:
            raise _Refused(
                f"candidate version {number} and champion version {champion.version} were scored on "
                f"different {what} ({tag} {mine[:12]} vs {theirs[:12]}): their metrics cannot be compared. "
                "Evaluate both with the same data.eval_dataset / val_size / max_samples, template and eval "
                "section, or move the champion by hand (`ft rollback NAME --to VERSION`)"
            )
    return scores(champion, "tuned"), f"champion version {champion.version}", f"champion:{champion.version}"


def _checks(
    gate: list[GateRule], candidate: dict[str, float], reference: dict[str, float], number: int, label: str
) -> list[RuleCheck]:
    checks = []
    for i, rule in enumerate(gate):
        for who, values in ((f"candidate version {number}", candidate), (label, reference)):
            if rule.metric not in values:
                raise _Refused(
                    f"registry.gate[{i}].metric: '{rule.metric}' is not recorded for {who} "
                    f"(recorded: {', '.join(sorted(values)) or 'none'})"
                )
        checks.append(check_rule(rule, candidate[rule.metric], reference[rule.metric]))
    return checks


def _describe_ref(champion: ModelVersion | None, candidate: ModelVersion) -> str:
    if champion is not None:
        return f"champion:{champion.version}"
    return f"base:{candidate.tags.get(f'{registry.TAG_PREFIX}base_model', '')}"


def _record(client: MlflowClient, candidate: ModelVersion, decision: Decision) -> None:
    """Tags on the candidate version and the report in its run: why it passed, failed or was refused."""
    from mlflow.exceptions import MlflowException

    tags = {"result": decision.result, "reason": decision.reason, "compared_with": decision.compared_with}
    tags["at"] = decision.at
    for key, value in tags.items():
        client.set_model_version_tag(decision.model_name, str(decision.version), PROMOTION_TAG + key, value)
    if not candidate.run_id:
        log.info("[promote] version %s has no run: the report is not stored in MLflow", decision.version)
        return
    stamp = decision.at.replace(":", "").replace("+0000", "Z")
    try:
        client.log_text(candidate.run_id, decision.report, f"promotion/v{decision.version}-{stamp}.md")
    except MlflowException as exc:  # a deleted run: the tags still say what happened
        log.warning("[promote] could not store the report in run %s: %s", candidate.run_id, exc)


def _report(decision: Decision, candidate: ModelVersion, champion: ModelVersion | None) -> str:
    """Markdown: the decision, the gate's rules with both values, and every score of base, champion
    and candidate on the shared eval set."""
    lines = [
        f"# Promotion of {decision.model_name} version {decision.version}: {decision.result}",
        "",
        f"- at: {decision.at}",
        f"- compared with: {decision.compared_with or 'nothing'}",
        f"- eval set: `{candidate.tags.get(registry.EVAL_FINGERPRINT_TAG, 'unknown')[:16]}`",
        f"- reason: {decision.reason}",
    ]
    if decision.promoted:
        lines.append(
            f"- champion: version {decision.champion_before or '(none)'} -> version {decision.version}"
        )
    elif decision.champion_before is not None:
        lines.append(f"- champion: unchanged, version {decision.champion_before}")
    if decision.checks:
        lines += ["", "| metric | better | candidate | reference | improvement | needed | result |"]
        lines.append("|---|---|---|---|---|---|---|")
        for c in decision.checks:
            scale, unit = (100.0, "%") if c.relative else (1.0, "")
            lines.append(
                f"| {c.metric} | {c.direction} | {c.candidate:.6g} | {c.reference:.6g} | "
                f"{c.improvement * scale:+.4g}{unit} | {c.required * scale:+.4g}{unit} | "
                f"{'pass' if c.passed else 'FAIL'} |"
            )
    columns = [Column("base", scores(candidate, "base"))]
    if champion is not None and int(champion.version) != decision.version:
        same_set = all(
            champion.tags.get(tag) == candidate.tags.get(tag)
            for tag in (registry.EVAL_FINGERPRINT_TAG, registry.EVAL_CONFIG_TAG)
        )
        note = "" if same_set else "scored on another eval set or settings: not comparable"
        columns.append(
            Column(f"champion v{champion.version}", scores(champion, "tuned") if same_set else None, note)
        )
    columns.append(Column(f"candidate v{decision.version}", scores(candidate, "tuned")))
    table = comparison_table(columns)  # the same table as the evaluate step's comparison.md
    if table:
        lines += ["", table.rstrip("\n")]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- champion moves, rollback


@dataclass
class Rollback:
    model_name: str
    previous: int
    version: int
    message: str


def rollback(tracking_uri: str, model_name: str, to: int | None = None) -> Rollback:
    """Move `champion` back to the version it pointed to before (or to version `to`) and say which."""
    from mlflow.exceptions import MlflowException

    client = open_registry(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        raise ModelNotAvailableError(
            f"registry: no registered model '{model_name}' in {tracking_uri}"
        ) from exc
    current = registry.get_version_by_alias(client, model_name, registry.CHAMPION)
    if current is None:
        raise ModelNotAvailableError(f"registry: {model_name} has no champion to roll back")
    now = int(current.version)
    stack = registry.champion_stack(registry.champion_history(client, model_name))
    if not stack or stack[-1] != now:
        stack.append(now)
    if to is None:
        if len(stack) < 2:
            raise ModelNotAvailableError(
                f"registry: {model_name} version {now} is the first champion recorded: nothing to roll "
                "back to (name one with --to VERSION)"
            )
        to = stack[-2]
    else:
        try:
            target = client.get_model_version(model_name, str(to))
        except MlflowException as exc:
            raise ModelNotAvailableError(f"registry: {model_name} version {to} does not exist") from exc
        if target.status != "READY":
            raise ModelNotAvailableError(f"registry: {model_name} version {to} is {target.status}")
        if int(to) == now:
            return Rollback(model_name, now, now, f"{model_name}: version {now} is already champion")
    at = _now()
    registry.move_champion(client, model_name, int(to), "rollback", at)
    client.set_model_version_tag(model_name, str(now), PROMOTION_TAG + "rolled_back_at", at)
    message = f"{model_name}: champion moved back from version {now} to version {to}"
    log.info("[rollback] %s", message)
    return Rollback(model_name, now, int(to), message)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
