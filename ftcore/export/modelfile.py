"""An Ollama Modelfile for an exported model folder, built from ftflow's template registry.

`ollama create NAME -f Modelfile` in the folder imports the safetensors weights (FROM .) and chats with
the prompt format the model was trained with: TEMPLATE is the template's turns in Ollama's Go-template
syntax over `.Messages`, SYSTEM its default system prompt, one `PARAMETER stop` per stop word.
"""

from __future__ import annotations

from pathlib import Path

from ftcore.data.template import Template, get_template
from ftcore.errors import ConfigError

MODELFILE = "Modelfile"


def _literal(text: str) -> str:
    """Template text as Go-template literal text: a '{{' in it becomes a quoted string action."""
    return text.replace("{{", '{{ "{{" }}')


def _split(template: Template, pattern: str) -> tuple[str, str]:
    before, after = pattern.split("{content}")
    return _literal(before), _literal(after)


def go_template(template: Template) -> str:
    """The template's turns as one Ollama TEMPLATE (Go text/template over .System and .Messages).

    BOS is left to the runtime (Ollama's tokenizer adds it, as its own Llama 3 template assumes), and
    contents are not trimmed (Go templates have no trim): what the Jinja chat template renders, minus
    its BOS, for contents without surrounding whitespace. Reasoning comes in as Ollama's .Thinking."""
    sys_pre, sys_post = _split(template, template.format_system)
    user_pre, user_post = _split(template, template.format_user)
    asst_pre, asst_post = _split(template, template.format_assistant)
    system = f"{{{{ if .System }}}}{sys_pre}{{{{ .System }}}}{sys_post}"
    if template.always_system:
        system += f"{{{{ else }}}}{sys_pre}{sys_post}"
    system += "{{ end }}"
    user = f"{user_pre}{{{{ .Content }}}}{user_post}"
    reply = "{{ .Content }}"
    turns = "{{ range $i, $_ := .Messages }}"
    thinking = template.thinking
    if thinking is not None:
        turns += "{{ $rest := len (slice $.Messages $i) }}"
    if thinking is not None and thinking.enabled:
        # thinking on: the final reply keeps its reasoning block (Ollama passes it as .Thinking)
        block = f"{_literal(thinking.open)}{{{{ .Thinking }}}}{_literal(thinking.close)}"
        reply = f"{{{{ if eq $rest 1 }}}}{block}{{{{ end }}}}{reply}"
    elif thinking is not None:
        # thinking off: an empty reasoning block opens the reply being generated (or the final one)
        user += f"{{{{ if or (eq $rest 1) (eq $rest 2) }}}}{_literal(thinking.empty)}{{{{ end }}}}"
    turns += (
        f'{{{{ if eq .Role "user" }}}}{user}'
        f'{{{{ else if eq .Role "assistant" }}}}{asst_pre}{reply}{asst_post}'
        "{{ end }}{{ end }}"
    )
    return system + turns


def _quoted(value: str, what: str, template: Template) -> str:
    if '"""' in value:
        raise ConfigError(
            f"chat template '{template.name}': its {what} contains '\"\"\"', which a Modelfile cannot hold"
        )
    return f'"""{value}"""'


def modelfile_text(template_name: str) -> str:
    """The Modelfile for a model trained with the template `template_name`."""
    template = get_template(template_name)
    lines = [
        f"# Ollama Modelfile written by ftflow (chat template '{template.name}').",
        "# Import and chat: ollama create NAME -f Modelfile && ollama run NAME",
        "FROM .",
        f"TEMPLATE {_quoted(go_template(template), 'turns', template)}",
    ]
    if template.default_system:
        lines.append(f"SYSTEM {_quoted(template.default_system, 'default system prompt', template)}")
    for word in template.stop_words:
        if '"' in word:
            raise ConfigError(f"chat template '{template.name}': stop word {word!r} holds a quote")
        lines.append(f'PARAMETER stop "{word}"')
    return "\n".join(lines) + "\n"


def write_modelfile(out_dir: Path, template_name: str) -> Path:
    """Write `out_dir`/Modelfile for the model in `out_dir` (merged or quantized); returns its path."""
    path = Path(out_dir) / MODELFILE
    path.write_text(modelfile_text(template_name), encoding="utf-8")
    return path
