"""Gradio components for the schema's fields: one component per FieldSpec, placed by section, relabelled
by language, read back into a validated config (bad values marked on their fields)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui import i18n
from webui.schema import UNSET, FieldSpec, FormErrors, config_to_values, fields, values_to_config

# General settings: the model, its template, the method and its quantization and speed switches
GENERAL = ("name", "workdir", "model.", "data.template", "train.finetuning_type", "train.quantization.")
GENERAL += ("train.speed.",)
# sub-sections of train shown only for the method / stage that uses them
SHOWN_FOR: dict[str, tuple[str, tuple[str, ...]]] = {
    "train.lora": ("train.finetuning_type", ("lora",)),
    "train.freeze": ("train.finetuning_type", ("freeze",)),
    "train.galore": ("train.finetuning_type", ("full",)),
    "train.apollo": ("train.finetuning_type", ("full",)),
    "train.badam": ("train.finetuning_type", ("full",)),
    "train.pref": ("train.stage", ("rm", "dpo", "kto", "orpo", "simpo")),
    "train.rl": ("train.stage", ("grpo", "ppo")),
}


def area_of(spec: FieldSpec) -> str:
    """Which tab holds a field: general, train, evaluate, export, registry or chat (serve)."""
    if any(spec.path == p or (p.endswith(".") and spec.path.startswith(p)) for p in GENERAL):
        return "general"
    return {"data": "train", "train": "train", "eval": "evaluate", "export": "export"}.get(
        spec.section, {"registry": "registry", "serve": "chat"}.get(spec.section, "general")
    )


class Form:
    """The field components of the board, by path, and the ui-text components to relabel."""

    def __init__(self) -> None:
        self.components: dict[str, gr.components.Component] = {}
        self.groups: dict[str, gr.Accordion] = {}
        self.texts: dict[str, tuple[str, Any]] = {}  # ui key -> (attribute, component)
        self.model_choices: list[str] = []

    @property
    def paths(self) -> list[str]:
        return list(self.components)

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.components.values())

    def text(self, key: str, component: Any, attr: str = "label") -> Any:
        """Register a component whose `attr` shows the board's word `key` (relabelled by language)."""
        self.texts[key + "#" + str(id(component))] = (attr, component)
        return component

    def render(self, area: str, lang: str = "en") -> None:
        """The components of one area, grouped in accordions by sub-section, in schema order."""
        specs = [s for s in fields() if area_of(s) == area]
        by_group: dict[str, list[FieldSpec]] = {}
        for spec in specs:
            group = spec.group if spec.group.count(".") >= 1 else ""
            by_group.setdefault(group, []).append(spec)
        for group, members in by_group.items():
            if not group:
                self._rows(members, lang)
                continue
            visible = group not in SHOWN_FOR or SHOWN_FOR[group][1][0] in ("lora", "sft")
            title = i18n.ui(f"group.{group}", lang)
            with gr.Accordion(title, open=group in ("train.lora",), visible=visible) as acc:
                self.groups[group] = self.text(f"group.{group}", acc)
                self._rows(members, lang)

    def _rows(self, members: list[FieldSpec], lang: str) -> None:
        """Values in one row, switches in another (a checkbox squeezed between text boxes wraps its
        label one word a line)."""
        for row in ([s for s in members if s.kind != "bool"], [s for s in members if s.kind == "bool"]):
            if row:
                with gr.Row(equal_height=False):
                    for spec in row:
                        self.components[spec.path] = self._component(spec, lang)

    def _component(self, spec: FieldSpec, lang: str) -> gr.components.Component:
        common = {
            "label": i18n.label(spec, lang),
            "info": i18n.info(spec, lang),
            "value": spec.default,
            "elem_id": "f-" + spec.path.replace(".", "-"),
            "min_width": 220,
        }
        if spec.path == "model.name_or_path":
            return gr.Dropdown(choices=self.model_choices, allow_custom_value=True, filterable=True, **common)
        reason = unavailable(spec.path)
        if reason:  # a GPU-only switch this machine cannot use: disabled, saying why
            common["info"] = f"⛔ {reason}"
            common["interactive"] = False
        if spec.kind == "bool":
            return gr.Checkbox(scale=1, **common)
        if spec.kind == "choice":
            choices = [str(c) for c in spec.choices] + ([UNSET] if spec.optional else [])
            return gr.Dropdown(choices=choices, **common)
        if spec.kind in ("int", "float") and not spec.optional:  # optional: a text box, empty = unset
            return gr.Number(precision=0 if spec.kind == "int" else None, **common)
        kind = "password" if spec.kind == "secret" else "text"
        return gr.Textbox(type=kind, lines=1, max_lines=4 if spec.kind == "yaml" else 1, **common)

    # --- reading and writing ------------------------------------------------------------------
    def values(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """{path: form value} of the components' values, as handlers receive them (in `inputs` order)."""
        return dict(zip(self.paths, args, strict=True))

    def config(self, args: tuple[Any, ...]):  # -> PipelineConfig, raises FormErrors
        return values_to_config(self.values(args))

    def show_config(self, cfg: Any) -> list[Any]:
        """Component updates that show a config (loading a file)."""
        values = config_to_values(cfg)
        return [gr.update(value=values[path]) for path in self.paths]

    def marks(self, errors: dict[str, str], lang: str) -> list[Any]:
        """Component updates that mark each bad field with its message and clear the others."""
        specs = {s.path: s for s in fields()}
        out = []
        for path in self.paths:
            if path in errors:
                out.append(gr.update(info=f"⚠ {errors[path]}", elem_classes=["ft-invalid"]))
            else:
                out.append(gr.update(info=i18n.info(specs[path], lang), elem_classes=[]))
        return out

    def relabel(self, lang: str) -> list[Any]:
        """Updates for every field and ui text in `lang` (outputs: inputs + text components)."""
        specs = {s.path: s for s in fields()}
        out = [
            gr.update(label=i18n.label(specs[p], lang), info=i18n.info(specs[p], lang)) for p in self.paths
        ]
        for key, (attr, _component) in self.texts.items():
            out.append(gr.update(**{attr: i18n.ui(key.split("#", 1)[0], lang)}))
        return out

    @property
    def text_components(self) -> list[Any]:
        return [component for _attr, component in self.texts.values()]

    def visibility(self, finetuning_type: str, stage: str) -> list[Any]:
        """Show the sub-sections the chosen method and stage use (outputs: the groups)."""
        current = {"train.finetuning_type": finetuning_type, "train.stage": stage}
        out = []
        for group in self.groups:
            rule = SHOWN_FOR.get(group)
            out.append(gr.update(visible=rule is None or current[rule[0]] in rule[1]))
        return out


# switches that need a GPU or a package: (the value that turns them on)
SPEED_SWITCHES = {
    "train.speed.flash_attn": "fa2",
    "train.speed.enable_liger_kernel": True,
    "train.speed.use_unsloth": True,
}


def unavailable(path: str) -> str | None:
    """Why a speed switch cannot be turned on here (the same check preflight runs), or None."""
    if path not in SPEED_SWITCHES:
        return None
    from ftcore.config.methods import SpeedConfig
    from ftcore.errors import ConfigError
    from ftcore.train.methods.speed import check_speed

    try:
        check_speed(SpeedConfig(**{path.rsplit(".", 1)[1]: SPEED_SWITCHES[path]}))
    except ConfigError as exc:
        return str(exc)
    return None


def error_markdown(exc: FormErrors, lang: str) -> str:
    lines = [f"**{i18n.ui('invalid', lang)}:**"]
    lines += [f"- `{path}`: {message}" for path, message in exc.errors.items()]
    return "\n".join(lines)
