"""`ft doctor`: check the environment a job would run in, and say how to fix what is wrong.

Each check is a small function returning Findings; nothing here starts work, downloads or writes
outside a temporary probe file. A job's config (optional) adds its own tracking URI and workdir.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from ftcore.config.pipeline import PipelineConfig

Level = Literal["ok", "warn", "fail"]

# (distribution, lowest version ftflow is tested with, why it matters)
PACKAGES = (
    ("torch", "2.4", "training and inference"),
    ("transformers", "5.0", "models and tokenizers"),
    ("peft", "0.17", "LoRA adapters"),
    ("datasets", "3.0", "the Arrow data cache"),
    ("accelerate", "1.0", "device placement"),
    ("prefect", "3.4", "flows, deployments, the UI"),
    ("mlflow", "3.0", "tracking and the model registry"),
    ("fastapi", "0.110", "ft serve"),
)
MIN_FREE_GB = 10.0


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.level]
        return f"[{mark}] {self.check}: {self.detail}" + (f"\n       fix: {self.fix}" if self.fix else "")


def _vtuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_python() -> list[Finding]:
    current = ".".join(map(str, sys.version_info[:3]))
    return [Finding("ok", "python", f"{current} at {sys.executable}")]


def check_packages() -> list[Finding]:
    found = []
    for dist, lowest, why in PACKAGES:
        try:
            have = version(dist)
        except PackageNotFoundError:
            found.append(Finding("fail", dist, f"not installed ({why})", "bash scripts/install.sh"))
            continue
        if _vtuple(have) < _vtuple(lowest):
            found.append(
                Finding(
                    "fail", dist, f"{have} is older than {lowest} ({why})", f"pip install '{dist}>={lowest}'"
                )
            )
        else:
            found.append(Finding("ok", dist, have))
    return found


def check_torch() -> list[Finding]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = torch.cuda.is_bf16_supported()
        detail = (
            f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {name}, bf16 {'yes' if bf16 else 'no'}"
        )
        return [Finding("ok", "device", detail)]
    threads = torch.get_num_threads()
    return [
        Finding(
            "warn",
            "device",
            f"no GPU: training runs on {threads} CPU thread(s) in fp32 (fine for the tiny built-in models)",
            "on a GPU machine install the CUDA build of torch before ftflow",
        )
    ]


def _get(url: str, timeout: float) -> str | None:
    """None when `url` answers (any status below 500), else the reason it does not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def check_prefect(api: str | None, timeout: float = 5.0) -> list[Finding]:
    """`api`: the Prefect API the job would use, as the orchestration layer resolves it (environment
    or Prefect profile); ftcore itself never imports prefect."""
    api = (api or "").strip()
    if not api:
        return [
            Finding(
                "ok",
                "prefect api",
                "not set: each `ft run` starts a temporary local server (runs vanish with it)",
                "",
            )
        ]
    problem = _get(api.rstrip("/") + "/health", timeout)
    if problem:
        return [
            Finding(
                "fail",
                "prefect api",
                f"{api} does not answer ({problem})",
                "start the server (`prefect server start`) or fix / unset PREFECT_API_URL",
            )
        ]
    return [Finding("ok", "prefect api", f"{api} answers")]


def check_mlflow(cfg: PipelineConfig | None, timeout: float = 5.0) -> list[Finding]:
    from ftcore.tracking import is_server, resolve_tracking_uri, sqlite_path

    if cfg is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        return [
            Finding("ok", "mlflow", "no MLFLOW_TRACKING_URI: each job uses sqlite:///<workdir>/mlflow.db")
        ]
    workdir = cfg.workdir_path if cfg else Path.cwd()
    uri = resolve_tracking_uri(cfg.registry.tracking_uri if cfg else None, workdir)
    if is_server(uri):
        problem = _get(uri.rstrip("/") + "/health", timeout)
        if problem:
            return [
                Finding(
                    "fail",
                    "mlflow",
                    f"tracking server {uri} does not answer ({problem})",
                    "start `mlflow server`, or fix / unset MLFLOW_TRACKING_URI and registry.tracking_uri",
                )
            ]
        return [Finding("ok", "mlflow", f"tracking server {uri} answers")]
    db = sqlite_path(uri)
    if db is not None:
        parent = next((p for p in [db.parent, *db.parents] if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            return [Finding("fail", "mlflow", f"{uri}: cannot create {db}", "choose a writable location")]
        return [Finding("ok", "mlflow", f"local store {uri} (a file per job unless shared)")]
    return [Finding("ok", "mlflow", f"store {uri}")]


def _writable(path: Path) -> bool:
    probe_dir = next((p for p in [path, *path.parents] if p.exists()), None)
    if probe_dir is None:
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir):
            return True
    except OSError:
        return False


def check_caches() -> list[Finding]:
    from ftcore.builtin import ftflow_home

    found = []
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub")).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    cached = len(list(hub.glob("models--*"))) if hub.is_dir() else 0
    mode = "offline (HF_HUB_OFFLINE)" if offline else "online"
    level: Level = "ok" if _writable(hub) else "fail"
    found.append(
        Finding(
            level,
            "hugging face cache",
            f"{hub}: {cached} model(s) cached, {mode}",
            "" if level == "ok" else "set HF_HOME / HF_HUB_CACHE to a writable folder",
        )
    )
    ms = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope")).expanduser()
    found.append(Finding("ok", "modelscope cache", str(ms)))
    home = ftflow_home()
    level = "ok" if _writable(home) else "fail"
    found.append(
        Finding(
            level,
            "ftflow cache",
            f"{home} (datasets, tokenized data, base-model scores)",
            "" if level == "ok" else "set FTFLOW_HOME to a writable folder",
        )
    )
    return found


def check_disk(paths: list[Path], min_free_gb: float = MIN_FREE_GB) -> list[Finding]:
    found, seen = [], set()
    for path in paths:
        existing = next((p for p in [path, *path.parents] if p.exists()), None)
        if existing is None:
            continue
        usage = shutil.disk_usage(existing)
        if (usage.total, usage.free) in seen:
            continue  # same filesystem as a path already reported
        seen.add((usage.total, usage.free))
        free = usage.free / 1e9
        level: Level = "ok" if free >= min_free_gb else "warn"
        fix = "" if level == "ok" else "free space: checkpoints and merged models of a 7B model need ~50 GB"
        found.append(Finding(level, "disk", f"{free:.0f} GB free at {existing}", fix))
    return found


def check_side_envs() -> list[Finding]:
    from ftcore import venvs

    found = []
    for name, side in sorted(venvs.SIDE_ENVS.items()):
        if venvs.is_installed(name):
            found.append(Finding("ok", f"venv {name}", str(venvs.python_path(name))))
        else:
            found.append(
                Finding(
                    "warn",
                    f"venv {name}",
                    f"not installed: needed for {side.purpose}",
                    f"ft env install {name}",
                )
            )
    return found


def diagnose(
    cfg: PipelineConfig | None = None, timeout: float = 5.0, prefect_api: str | None = None
) -> list[Finding]:
    """Every check, in the order a job meets them. `prefect_api` defaults to PREFECT_API_URL."""
    from ftcore.builtin import ftflow_home

    disk_paths = [ftflow_home(), Path.cwd()] + ([cfg.workdir_path] if cfg else [])
    checks: list[Callable[[], list[Finding]]] = [
        check_python,
        check_packages,
        check_torch,
        lambda: check_prefect(prefect_api or os.environ.get("PREFECT_API_URL"), timeout),
        lambda: check_mlflow(cfg, timeout),
        check_caches,
        lambda: check_disk(disk_paths),
        check_side_envs,
    ]
    findings: list[Finding] = []
    for check in checks:
        findings.extend(check())
    return findings
