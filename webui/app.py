"""The board's page: General and Train (configure, start / stop / resume, watch), then the areas of
webui/areas.py. Every handler is a client call: config schema, `ft` jobs, MLflow, ftcore."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ftcore.config import dump_config, load_config
from ftcore.errors import FtflowError
from webui import areas, flowruns, i18n, jobs
from webui.form import Form, error_markdown
from webui.preview import data_stats, dataset_preview, model_choices
from webui.schema import FormErrors

CSS = ".ft-invalid input, .ft-invalid textarea { border-color: #d33 !important; }"


def launch(demo: gr.Blocks, **kwargs: Any) -> None:
    """Serve the board. Gradio probes its own address with a 3 s timeout after starting and raises
    when that fails, which a loaded machine makes happen though the server runs: skip the probe."""
    import inspect

    if "_frontend" in inspect.signature(demo.launch).parameters:
        kwargs["_frontend"] = False
    demo.queue().launch(css=CSS, show_error=True, **kwargs)


def _lang(value: str) -> str:
    return "zh" if value.startswith("中") or value == "zh" else "en"


def build() -> gr.Blocks:
    """The whole board (not launched)."""
    form = Form()
    form.model_choices = model_choices()
    with gr.Blocks(title="ftflow") as demo:
        title = form.text("title", gr.Markdown("## ftflow board"), "value")
        lang = gr.Radio(["English", "中文"], value="English", label="Language", elem_id="lang")
        form.text("language", lang)
        errors = gr.Markdown(elem_id="form-errors")
        with gr.Tabs():
            with form.text("general", gr.Tab("General", id="general")):
                with gr.Row():
                    family = form.text("family", gr.Dropdown(_families(), label="Family", value=""))
                    tag = form.text("tags", gr.Dropdown(_tags(), label="Tags", value=""))
                form.render("general")
            with form.text("train", gr.Tab("Train", id="train")):
                form.render("train")
                preview_md = form.text("dataset_preview", gr.Markdown("", elem_id="data-preview"), "label")
                with gr.Row():  # `ft data check`: counts and token lengths of every dataset of the job
                    stats_md = gr.Markdown("", elem_id="data-stats")
                    lengths = gr.Image(label="Token lengths", elem_id="data-lengths", visible=False)
                    stats_img = form.text("token_lengths", lengths)
                with gr.Row():
                    preview_btn = form.text("preview", gr.Button("Preview YAML and command"), "value")
                    cfg_path = form.text(
                        "config_path", gr.Textbox("runs/board.yaml", label="Config file path")
                    )
                    save_btn = form.text("save", gr.Button("Save config"), "value")
                    load_btn = form.text("load", gr.Button("Load config"), "value")
                with gr.Row():
                    yaml_box = gr.Code(language="yaml", label="YAML", elem_id="yaml-preview")
                    cmd_box = gr.Textbox(label=i18n.ui("command", "en"), elem_id="ft-command")
                    form.text("yaml", yaml_box)
                    form.text("command", cmd_box)
                with gr.Row():
                    start_btn = form.text(
                        "start", gr.Button("Start", variant="primary", elem_id="start"), "value"
                    )
                    stop_btn = form.text("stop", gr.Button("Stop (checkpoint kept)", elem_id="stop"), "value")
                    resume_btn = form.text("resume", gr.Button("Resume", elem_id="resume"), "value")
                    run_on = gr.Dropdown(
                        flowruns.target_choices(),
                        value=flowruns.default_target(),
                        label="Run on",
                        info="this machine, or a finetune deployment of the Prefect server (PREFECT_API_URL)",
                        allow_custom_value=True,
                        elem_id="run-on",
                    )
                    form.text("run_on", run_on)
                job = form.text(
                    "job", gr.Dropdown(jobs.list_jobs(), label="Job", elem_id="job", allow_custom_value=True)
                )
                job_status = gr.Markdown(elem_id="job-status")
                loss_plot = form.text(
                    "loss", gr.LinePlot(x="step", y="loss", label="Loss curve", elem_id="loss-plot")
                )
                links = gr.Markdown(elem_id="job-links")
                log = form.text("log", gr.Textbox(label="Log", lines=12, max_lines=12, elem_id="job-log"))
            areas.render_all(form, lang)
        timer = gr.Timer(2.0)

        inputs = form.inputs
        outputs_marks = [errors, *inputs]

        def relabel(value: str) -> list[Any]:
            language = _lang(value)
            return [*form.relabel(language), gr.update(value=f"## {i18n.ui('title', language)}")]

        lang.change(relabel, lang, [*inputs, *form.text_components, title])

        def filter_models(fam: str, tg: str) -> Any:
            return gr.update(choices=model_choices(fam or None, tg or None))

        family.change(filter_models, [family, tag], form.components["model.name_or_path"])
        tag.change(filter_models, [family, tag], form.components["model.name_or_path"])
        ft, st = form.components["train.finetuning_type"], form.components["train.stage"]
        for trigger in (ft, st):
            trigger.change(form.visibility, [ft, st], list(form.groups.values()))

        def checked(language: str, *args: Any) -> tuple[Any, list[Any]]:
            """(config, marks): the config, or None and the fields marked with the schema's messages."""
            try:
                cfg = form.config(args)
            except FormErrors as exc:
                return None, [error_markdown(exc, _lang(language)), *form.marks(exc.errors, _lang(language))]
            return cfg, ["", *form.marks({}, _lang(language))]

        def preview(language: str, *args: Any) -> list[Any]:
            cfg, marks = checked(language, *args)
            if cfg is None:
                return [*marks, "", "", gr.update(), "", gr.update(visible=False)]
            path = Path("runs/.board") / cfg.name / "config.yaml"
            command = shlex.join(jobs.command("run", path))
            try:
                stats, image = data_stats(cfg)
            except FtflowError as exc:  # a bad dataset: the message names its file and row
                marks = [f"**{exc}**", *form.marks({"data.dataset": str(exc)}, _lang(language))]
                stats, image = f"**{exc}**", None
            shown = gr.update(value=_png(image) if image else None, visible=image is not None)
            return [*marks, dump_config(cfg), command, dataset_preview(cfg), stats, shown]

        preview_btn.click(
            preview, [lang, *inputs], [*outputs_marks, yaml_box, cmd_box, preview_md, stats_md, stats_img]
        )

        def save(language: str, path: str, *args: Any) -> list[Any]:
            cfg, marks = checked(language, *args)
            if cfg is not None:
                jobs.save_config(cfg, Path(path))
                gr.Info(i18n.ui("saved", _lang(language)).format(path=path))
            return marks

        save_btn.click(save, [lang, cfg_path, *inputs], outputs_marks)

        def load(path: str) -> list[Any]:
            try:
                return ["", *form.show_config(load_config(path))]
            except FtflowError as exc:
                return [f"**{exc}**", *[gr.update() for _ in inputs]]

        load_btn.click(load, cfg_path, outputs_marks)

        def start(language: str, target: str, *args: Any) -> list[Any]:
            cfg, marks = checked(language, *args)
            if cfg is None:
                return [*marks, gr.update()]
            deployment = None if not target or target == flowruns.LOCAL else target
            try:
                from ftcore.steps import preflight

                preflight(cfg)  # a missing dataset file or an unreachable model names itself here
                jobdir = jobs.start(cfg, deployment=deployment)
            except FtflowError as exc:
                return [f"**{exc}**", *marks[1:], gr.update()]
            return [*marks, gr.update(choices=jobs.list_jobs(), value=jobdir.name)]

        start_btn.click(start, [lang, run_on, *inputs], [*outputs_marks, job])

        def stop(name: str, language: str) -> str:
            lang = _lang(language)
            if name and jobs.stop(name):
                return i18n.ui("stopping", lang).format(name=name)
            return i18n.ui("not_running", lang).format(name=name or i18n.ui("no_job", lang))

        stop_btn.click(stop, [job, lang], job_status)

        def resume(name: str) -> Any:
            if not name:
                return gr.update()
            try:
                jobs.resume(name)  # as it ran before: a local process, or the same deployment
            except FtflowError as exc:
                gr.Warning(str(exc))
            return gr.update(value=name)

        resume_btn.click(resume, job, job)
        timer.tick(watch, [job, lang], [job_status, loss_plot, links, log])
        # a reopened browser shows the newest job again (running or not)
        demo.load(_newest_job, None, job)
    demo.ftflow_form = form  # the field components by path (tests reach every field through it)
    return demo


def watch(name: str | None, language: str = "en") -> list[Any]:
    """The job's state, loss curve, links and log tail (the timer calls it every 2 s)."""
    status = jobs.status(name) if name else None
    if status is None:
        return ["", gr.update(), "", ""]
    lang = _lang(language)
    head = f"**{status.name}**: {i18n.ui('state.' + status.state, lang)}"
    if status.prefect_state:  # a deployment run: Scheduled / Late / Pending / Running / Cancelling ...
        head += f" ({status.prefect_state})"
    if status.max_steps:
        speed = status.tokens_per_s or "?"
        step, eta = i18n.ui("step", lang), i18n.ui("eta", lang)
        head += f" | {step} {status.step}/{status.max_steps} | {speed} tok/s | {eta} {status.eta}"
    frame = pd.DataFrame(status.losses, columns=["step", "loss"])
    return [head, frame, areas.job_links(name, status), status.log_tail]


def _png(path: Path) -> Any:
    """The image itself (Gradio serves files only from its own folders, the board dir may be elsewhere)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.copy()


def _newest_job() -> Any:
    names = jobs.list_jobs()
    return gr.update(choices=names, value=names[0] if names else None)


def _families() -> list[str]:
    from ftcore.catalog import load_catalog

    return ["", *sorted({m.family for m in load_catalog().values()})]


def _tags() -> list[str]:
    from ftcore.catalog import all_tags

    return ["", *all_tags()]
