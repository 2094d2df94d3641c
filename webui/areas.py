"""Evaluate, Chat, Export and Registry areas. Evaluate (webui/evaluate_area.py) and Export run
`ft eval` / `ft export` as jobs (their own processes); Chat loads the model with ftcore's serving
backend (inference, not training); Registry reads MLflow and promotes through the same gate as
`ft promote`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ftcore.errors import FtflowError
from webui import chat, evaluate_area, i18n, jobs
from webui.form import Form
from webui.schema import FormErrors

_ARTIFACT_LINE = re.compile(r"^(?P<name>\w+)\s+(?P<kind>\w+)\s+(?P<path>/\S.*)$", re.M)


def render_all(form: Form, lang: gr.Radio) -> None:
    """The four areas as tabs (inside the board's gr.Tabs), wired to their handlers."""

    def cfg_of(*args: Any):  # -> PipelineConfig | str (the error)
        try:
            return form.config(args)
        except FormErrors as exc:
            return "; ".join(f"{p}: {m}" for p, m in exc.errors.items())

    wire_evaluate = evaluate_area.render(form, cfg_of)
    with form.text("chat", gr.Tab("Chat", id="chat")):
        missing = chat.vllm_unavailable()  # then vLLM cannot be picked, and the switch says why
        with gr.Row(equal_height=True):
            source = form.text(
                "chat_source", gr.Textbox(label=i18n.ui("chat_source", "en"), elem_id="chat-source", scale=3)
            )
            backend = gr.Radio(
                list(chat.BACKENDS),
                value="transformers",
                label=i18n.ui("backend", "en"),
                info=f"⛔ vLLM: {missing}" if missing else "vLLM: `ft serve --backend vllm`, started here",
                interactive=missing is None,
                elem_id="chat-backend",
                scale=2,
            )
            form.text("backend", backend)
            with gr.Column(scale=1, min_width=160):
                load_btn = form.text("load_model", gr.Button("Load model", elem_id="chat-load"), "value")
                unload_btn = gr.Button("Unload model", elem_id="chat-unload")
                form.text("unload_model", unload_btn, "value")
        loaded = gr.Markdown(elem_id="chat-loaded")
        system = form.text("system_prompt", gr.Textbox(label="System prompt"))
        with gr.Row():
            max_tokens = form.text("max_new_tokens", gr.Slider(1, 1024, 32, step=1, label="Max new tokens"))
            temperature = form.text("temperature", gr.Slider(0.0, 1.5, 0.7, label="Temperature"))
            top_p = form.text("top_p", gr.Slider(0.05, 1.0, 0.9, label="Top-p"))
        bot = form.text("conversation", gr.Chatbot(label="Conversation", elem_id="chatbot", height=320))
        with gr.Row():
            message = form.text("message", gr.Textbox(label="Message", elem_id="chat-message", scale=4))
            send = form.text("send", gr.Button("Send", variant="primary", elem_id="chat-send"), "value")
            clear = form.text("clear", gr.Button("Clear"), "value")
        with form.text("serve_settings", gr.Accordion(i18n.ui("serve_settings", "en"), open=False)):
            form.render("chat")
    with form.text("export", gr.Tab("Export", id="export")):
        form.render("export")
        export_btn = form.text("run_export", gr.Button("Export", elem_id="run-export"), "value")
        card = form.text("model_card", gr.Markdown(elem_id="model-card"), "label")
        export_log = form.text("log", gr.Textbox(lines=8, max_lines=8, label="Log", elem_id="export-log"))
    with form.text("registry", gr.Tab("Registry", id="registry")):
        form.render("registry")
        refresh = form.text("refresh", gr.Button("Refresh", elem_id="registry-refresh"), "value")
        versions = form.text("versions", gr.Dataframe(elem_id="registry-versions", wrap=True), "label")
        with gr.Row():
            version = form.text(
                "version", gr.Number(label="Version", precision=0, elem_id="registry-version")
            )
            promote_btn = gr.Button("Promote (through the gate)", elem_id="registry-promote")
            rollback_btn = gr.Button("Roll back", elem_id="registry-rollback")
            form.text("promote", promote_btn, "value")
            form.text("rollback", rollback_btn, "value")
        decision = gr.Markdown(elem_id="registry-decision")
    inputs = form.inputs  # every area's fields, now that all are rendered

    def run_step(verb: str):
        def handler(language: str, *args: Any):
            cfg = cfg_of(*args)
            if isinstance(cfg, str):
                yield f"**{cfg}**", ""
                return
            try:
                jobdir = jobs.start(cfg, verb)
            except FtflowError as exc:
                yield f"**{exc}**", ""
                return
            yield from _follow(jobdir.name, verb, i18n.lang_code(language))

        return handler

    wire_evaluate(inputs)
    export_btn.click(run_step("export"), [lang, *inputs], [card, export_log])
    load_btn.click(chat.load, [source, backend, lang], loaded)
    unload_btn.click(chat.unload, lang, loaded)
    send_args = [message, bot, system, max_tokens, temperature, top_p, lang]
    send.click(chat.respond, send_args, [bot, message])
    message.submit(chat.respond, send_args, [bot, message])
    clear.click(lambda: [], None, bot)

    def table(*args: Any) -> Any:
        cfg = cfg_of(*args)
        return pd.DataFrame() if isinstance(cfg, str) else registry_table(cfg)

    refresh.click(table, inputs, versions)

    def promote(number: float | None, *args: Any) -> list[Any]:
        cfg = cfg_of(*args)
        if isinstance(cfg, str):
            return [f"**{cfg}**", gr.update()]
        from ftcore.promote import promote_version

        try:
            made = promote_version(cfg, int(number) if number else None)
        except FtflowError as exc:
            return [f"**{exc}**", gr.update()]
        return [f"**{made.result}**: {made.reason}\n\n{made.report}", registry_table(cfg)]

    promote_btn.click(promote, [version, *inputs], [decision, versions])

    def rollback(*args: Any) -> list[Any]:
        cfg = cfg_of(*args)
        if isinstance(cfg, str):
            return [f"**{cfg}**", gr.update()]
        from ftcore.promote import rollback as move_back
        from ftcore.tracking import resolve_tracking_uri

        try:
            moved = move_back(
                resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path), cfg.registry.model_name
            )
        except FtflowError as exc:
            return [f"**{exc}**", gr.update()]
        return [moved.message, registry_table(cfg)]

    rollback_btn.click(rollback, inputs, [decision, versions])


def _follow(name: str, verb: str, lang: str = "en"):
    """Yield (result markdown, log tail) until the job ends."""
    import time

    while True:
        status = jobs.status(name, tail_lines=30)
        if status is None:
            return
        done = status.state != "running"
        state = i18n.ui(f"state.{status.state}", lang)
        yield (_result(status.log_tail, verb, lang) if done else f"{name}: {state}"), status.log_tail
        if done:
            return
        time.sleep(1.0)


def _result(log: str, verb: str, lang: str = "en") -> str:
    """`ft export`: the model card of the export folder (Evaluate reads its own: evaluate_area.result)."""
    for match in reversed(list(_ARTIFACT_LINE.finditer(log))):
        card = Path(match["path"]) / "README.md"
        if card.is_file():
            return f"`{match['path']}`\n\n" + card.read_text(encoding="utf-8")
    return i18n.ui("no_export", lang)


def registry_table(cfg: Any) -> pd.DataFrame:
    """Versions of the job's registered model: aliases, lineage tags, metrics."""
    from ftcore import registry, tracking

    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    db = tracking.sqlite_path(uri)
    if db is not None and not db.is_file():
        return pd.DataFrame(columns=["version", "aliases"])
    client = tracking.get_client(uri)
    name = cfg.registry.model_name
    try:
        found = client.search_model_versions(f"name = {tracking.filter_literal(name)}")
    except Exception:  # no such model yet
        return pd.DataFrame(columns=["version", "aliases"])
    aliases: dict[str, list[str]] = {}
    try:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    except Exception:
        pass
    rows = []
    for v in sorted(found, key=lambda v: int(v.version), reverse=True):
        metrics = registry.metrics_from_tags(v.tags)
        lineage = {k: t for k, t in v.tags.items() if k.startswith("ftflow.") or k.startswith("prefect.")}
        rows.append(
            {
                "version": int(v.version),
                "aliases": ", ".join(aliases.get(str(v.version), [])),
                "metrics": ", ".join(f"{k}={val:.4g}" for k, val in sorted(metrics.items())),
                "lineage": ", ".join(f"{k}={t}" for k, t in sorted(lineage.items())),
                "run": v.run_id or "",
            }
        )
    return pd.DataFrame(rows)


def job_links(name: str, status: Any) -> str:
    """Links to the job's Prefect flow run and MLflow run (its id when MLflow is a local store)."""
    parts = []
    if status.flow_run_url:
        parts.append(f"Prefect flow run: [{status.flow_run}]({status.flow_run_url})")
    elif status.flow_run:
        parts.append(f"Prefect flow run: `{status.flow_run}`")
    links = getattr(status, "links", {})  # a deployment run's link artifacts (MLflow run, model version)
    parts += [f"{what}: {link}" for what, link in sorted(links.items())]
    run = _mlflow_run(name) if not any(w.startswith("MLflow run") for w in links) else ""
    if run:
        parts.append(f"MLflow run: {run}")
    return " | ".join(parts)


def _mlflow_run(name: str) -> str:
    from ftcore import tracking
    from ftcore.config import load_config
    from ftcore.links import mlflow_run_url

    try:
        cfg = load_config(str(jobs.job_config(name)))
        uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
        db = tracking.sqlite_path(uri)
        if db is not None and not db.is_file():
            return ""
        client = tracking.get_client(uri)
        experiment = client.get_experiment_by_name(cfg.registry.experiment)
        if experiment is None:
            return ""
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`ftflow.job` = {tracking.filter_literal(cfg.name)}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except (FtflowError, OSError):
        return ""
    if not runs:
        return ""
    run_id = runs[0].info.run_id
    url = mlflow_run_url(uri, runs[0].info.experiment_id, run_id) if tracking.is_server(uri) else None
    return f"[{run_id}]({url})" if url else f"`{run_id}` ({uri})"
