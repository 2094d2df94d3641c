"""Small configs for tests: the built-in tiny models, the shipped data, few steps, a private workdir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftcore.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]

# Test conversations shared by the template tests (tests/test_templates*.py, test_builtin_families.py).
SINGLE = [
    {"role": "user", "content": "Reverse the letters of the word.\nstone"},
    {"role": "assistant", "content": "enots"},
]
# Whitespace around contents (templates that trim must trim it) and braces (no str.format).
MULTI = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "  Convert to uppercase.\nred apple \n"},
    {"role": "assistant", "content": " RED APPLE\n\n"},
    {"role": "user", "content": "Who are you? {not a format field}"},
    {"role": "assistant", "content": "I am ftflow-assistant, fine-tuned with ftflow."},
]
# No edge whitespace but Chinese text: for families whose official templates keep contents as is
# while LLaMA-Factory's do not (tests/test_templates_more.py).
MULTI_CJK = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "Convert to uppercase: red apple"},
    {"role": "assistant", "content": "RED APPLE"},
    {"role": "user", "content": "Who are you? {not a format field} 你是谁"},
    {"role": "assistant", "content": "I am ftflow-assistant, fine-tuned with ftflow."},
]
# Reasoning in every assistant turn: the official Qwen3 / R1 templates keep only the last turn's.
REASONING = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "<think>\n12 plus 7 is 19.\n</think>\n\n19"},
    {"role": "user", "content": "And 3 + 4?"},
    {"role": "assistant", "content": "<think>\nthree and four\n</think>\n\n7"},
]
SYSTEM = "You answer in one line.  "  # trailing spaces: trimmed by templates that trim
SYSTEM_PLAIN = "You answer in one line."


def small_config(workdir: Path, *overrides: str, **sections: Any) -> PipelineConfig:
    """A quick job: tiny-qwen2, 64 training rows, 8 steps, checkpoints every 4, eval on 16 rows."""
    base: dict[str, Any] = {
        "name": "test-job",
        "workdir": str(workdir),
        "model": {"name_or_path": "builtin:tiny-qwen2"},
        "data": {
            "dataset_dir": str(REPO / "data"),
            "dataset": ["demo_alpaca"],
            "eval_dataset": ["demo_alpaca_eval"],
            "max_samples": 64,
            "cutoff_len": 128,
        },
        "train": {
            "max_steps": 8,
            "save_steps": 4,
            "logging_steps": 2,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 8,
            "lora": {"rank": 8},
        },
        "eval": {"max_samples": 16, "generation_samples": 4, "max_new_tokens": 8},
        "registry": {"model_name": "test-model"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_config(base, list(overrides))


def prepared_inputs(cfg: PipelineConfig) -> tuple[Any, Any]:
    """The base model and tokenized data artifacts that train, evaluate and merge take."""
    from ftcore import steps

    model = steps.fetch_model(cfg)
    return model, steps.preprocess(cfg, model, steps.fetch_dataset(cfg))


def write_dataset(folder: Path, info: dict[str, Any], files: dict[str, object]) -> Path:
    """A dataset_dir: dataset_info.json plus data files (str written as is, anything else as JSON)."""
    import json

    (folder / "dataset_info.json").write_text(json.dumps(info))
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group: SIGTERM, then SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group has exited already
        proc.wait()
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    """A TCP port nothing listens on now (for servers started by tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server_at(root: Path) -> Iterator[str]:
    """A real `mlflow server` (sqlite backend, proxied artifact store under `root`); yields its URL."""
    import sys
    import time
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", str(root / "artifacts")]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (root / "server.log").read_text()
                    raise RuntimeError(f"mlflow server did not start:\n{text}") from None
                time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)
        log.close()


# The function the template tests' tool calls use (a non-ASCII description checks escaping).
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "天气 of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
