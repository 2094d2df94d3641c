"""The Evaluate area: score a finished board job or a registered version on an eval set and benchmark
tasks (eval.tasks), the results one table beside the base model and the registry's champion.

A job is evaluated by `ft eval` on its own saved config with this area's eval settings (its scores
beside base and today's champion: ftcore.evaluate.compare.eval_report); a version
(models:/NAME@ALIAS, models:/NAME/VERSION, in the registry of the form's settings) by webui.evaljob.
Both run as board jobs, in their own processes, never in the web server's.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ftcore.config import PipelineConfig, load_config
from ftcore.errors import ConfigError
from webui import jobs
from webui.evaljob import RESULTS, parse_ref

_EVAL_LINE = re.compile(r"^eval\s+eval\s+(?P<path>/\S.*)$", re.M)  # `ft eval`'s artifact line


def finished_jobs() -> list[str]:
    """Board training jobs that completed (what `ft eval` can score without training)."""
    out = []
    for name in jobs.list_jobs():
        meta = jobs.read_meta(name) or {}
        if meta.get("verb", "run") != "run":
            continue
        status = jobs.status(name, tail_lines=1)
        if status is not None and status.state == "completed":
            out.append(name)
    return out


def versions(cfg: PipelineConfig) -> list[str]:
    """models:/NAME@ALIAS and models:/NAME/VERSION of cfg's registered model, newest first."""
    from webui.areas import registry_table

    table = registry_table(cfg)
    name = cfg.registry.model_name
    out: list[str] = []
    for _, row in table.iterrows():
        out += [f"models:/{name}@{a.strip()}" for a in str(row.get("aliases", "")).split(",") if a.strip()]
    return out + [f"models:/{name}/{int(v)}" for v in table.get("version", [])]


def sources(cfg: PipelineConfig | None) -> list[str]:
    """What the area can evaluate: finished board jobs, then the registry's versions."""
    return finished_jobs() + (versions(cfg) if cfg is not None else [])


def eval_set_choices(cfg: PipelineConfig | None) -> list[str]:
    """The dataset names of the form's dataset_info.json ([] when it cannot be read)."""
    if cfg is None:
        return []
    from ftcore.data.loader import load_dataset_info
    from ftcore.errors import FtflowError

    try:
        return sorted(load_dataset_info(cfg.resolve_input(cfg.data.dataset_dir)))
    except (FtflowError, OSError, ValueError):
        return []


def start(source: str, eval_sets: list[str] | None, cfg: PipelineConfig) -> str:
    """Start the evaluation of `source` (a board job or a registered version) with cfg's eval settings
    and benchmark tasks, on `eval_sets` (dataset names; empty: the job's own held-out split, or cfg's
    for a version); returns the evaluation job's name. No source: the board job of the form's config
    (by its name), when there is one."""
    source = (source or "").strip() or (cfg.name if jobs.job_config(cfg.name).is_file() else "")
    if not source:
        raise ConfigError("evaluate: pick a finished job or a registered version (models:/NAME@ALIAS)")
    evaluation = cfg.eval.model_copy(update={"enabled": True})
    if source.startswith("models:/"):
        name, alias, number = parse_ref(source)
        data = cfg.data.model_copy(update={"eval_dataset": list(eval_sets)}) if eval_sets else cfg.data
        job = f"eval-{name}-{alias or 'v' + str(number)}"
        run = cfg.model_copy(update={"eval": evaluation, "data": data})
        return jobs.start(run, "eval", [source], name=job, module="webui.evaljob").name
    config = jobs.job_config(source)
    if not config.is_file():
        raise ConfigError(f"evaluate: no board job named '{source}' (nor models:/NAME@ALIAS)")
    job_cfg = load_config(str(config))
    data = job_cfg.data
    if eval_sets and list(eval_sets) != list(data.eval_dataset):
        if not data.eval_dataset and data.val_size > 0:  # the split came out of its training rows
            raise ConfigError(
                f"evaluate: job {source} held out data.val_size={data.val_size} of its training data; "
                "another eval set would change its training rows (it would need training again): leave "
                "the eval set empty to score it on its own held-out rows"
            )
        data = data.model_copy(update={"eval_dataset": list(eval_sets)})
    run = job_cfg.model_copy(update={"eval": evaluation, "data": data})
    return jobs.start(run, "eval", name=f"{source}-eval").name


def result(name: str) -> str:
    """The finished evaluation's table (markdown), or what its log says went wrong. A job's scores
    may come from its cached evaluation: the champion beside them is today's, not that day's."""
    from ftcore.artifacts import read_manifest
    from ftcore.evaluate.compare import eval_report

    jobdir = jobs.job_config(name).parent
    if (jobdir / RESULTS).is_file():
        return (jobdir / RESULTS).read_text(encoding="utf-8")
    status = jobs.status(name, tail_lines=100_000)
    log = status.log_tail if status else ""
    found = list(_EVAL_LINE.finditer(log))
    artifact = read_manifest(found[-1]["path"].strip()) if found else None
    if artifact is not None:
        metrics = artifact.metadata.get("metrics", {})
        scores = {
            who: {k.removeprefix(f"{who}/"): v for k, v in metrics.items() if k.startswith(f"{who}/")}
            for who in ("base", "tuned")
        }
        identity = {k: str(artifact.metadata.get(k, "")) for k in ("eval_fingerprint", "eval_config")}
        cfg = load_config(str(jobs.job_config(name)))
        samples = int(artifact.metadata.get("samples", 0))
        return eval_report(cfg, identity, {who: s for who, s in scores.items() if s}, samples)
    errors = [line for line in log.splitlines() if line.startswith("error") or "Error" in line]
    return "**no results**: " + (errors[-1] if errors else "see the log")


def follow(name: str, poll_s: float = 1.0):
    """Yield (result markdown, log tail) until the evaluation job ends."""
    while True:
        status = jobs.status(name, tail_lines=30)
        if status is None:
            return
        if status.state != "running":
            yield result(name), status.log_tail
            return
        yield f"{name}: {status.state}", status.log_tail
        time.sleep(poll_s)


def render(form: Any, cfg_of: Any) -> Any:
    """The Evaluate tab's components (inside the board's gr.Tabs); returns a function that wires
    their handlers once every area's fields exist (it takes the form's inputs)."""
    import gradio as gr

    with form.text("evaluate", gr.Tab("Evaluate", id="evaluate")) as tab:
        with gr.Row():
            source = gr.Dropdown(
                [],
                label="Model to evaluate",
                info="a finished board job, or a registered version: models:/NAME@ALIAS, models:/NAME/N",
                allow_custom_value=True,
                elem_id="eval-source",
                scale=3,
            )
            eval_sets = gr.Dropdown(
                [],
                multiselect=True,
                label="Eval set",
                info="dataset names of dataset_info.json (empty: the job's own held-out rows)",
                allow_custom_value=True,
                elem_id="eval-sets",
                scale=3,
            )
            refresh = gr.Button("↻", elem_id="eval-refresh", scale=0, min_width=60)
        form.text("eval_source", source)
        form.text("eval_sets", eval_sets)
        form.render("evaluate")
        eval_btn = form.text("run_eval", gr.Button("Evaluate", elem_id="run-eval"), "value")
        eval_out = form.text("results", gr.Markdown(elem_id="eval-results"), "label")
        eval_log = form.text("log", gr.Textbox(lines=8, max_lines=8, label="Log", elem_id="eval-log"))

    def wire(inputs: list[Any]) -> None:
        from ftcore.errors import FtflowError

        def choices(*args: Any) -> list[Any]:
            cfg = cfg_of(*args)
            cfg = None if isinstance(cfg, str) else cfg
            return [gr.update(choices=sources(cfg)), gr.update(choices=eval_set_choices(cfg))]

        refresh.click(choices, inputs, [source, eval_sets])
        tab.select(choices, inputs, [source, eval_sets])  # opening the tab lists what is there now

        def run(chosen: str, sets: list[str] | None, *args: Any):
            cfg = cfg_of(*args)
            if isinstance(cfg, str):
                yield f"**{cfg}**", ""
                return
            try:
                name = start(chosen, sets, cfg)
            except FtflowError as exc:
                yield f"**{exc}**", ""
                return
            yield from follow(name)

        eval_btn.click(run, [source, eval_sets, *inputs], [eval_out, eval_log])

    return wire
