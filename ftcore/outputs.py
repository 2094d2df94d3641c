"""Folders ftflow writes into: whether it may, and where a trained adapter sits in one.

ftflow replaces its own output folders (a finished export is renamed over the old one), so a folder a
user names as an output must be either new, empty, or one ftflow made before: anything else is the
user's data and is refused, never deleted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ftcore.artifacts import MANIFEST
from ftcore.errors import ConfigError

if TYPE_CHECKING:
    from ftcore.config.pipeline import PipelineConfig

# The train step's key file, written into its folder when training starts and kept while it resumes.
TRAIN_KEY_FILE = "ftflow-train-key"
# Files only ftflow writes into an output folder: a finished artifact's manifest or the train key file.
FTFLOW_MARKERS = (MANIFEST, TRAIN_KEY_FILE)


def is_ftflow_dir(path: Path) -> bool:
    """Whether `path` is a folder ftflow created (it holds one of ftflow's marker files)."""
    return any((Path(path) / marker).is_file() for marker in FTFLOW_MARKERS)


def claim_output_dir(path: str | Path, key_name: str) -> Path:
    """`path` as an output folder ftflow may fill and replace; refuses anything that holds other data.

    Allowed: a path that does not exist, an empty folder, or a folder ftflow made (see FTFLOW_MARKERS).
    `key_name` (e.g. 'export.export_dir') names the config key in the error.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists() and not path.is_symlink():
        return path
    if not path.is_dir():
        raise ConfigError(f"{key_name}: {path} is a file, not a folder; choose a new folder for the output")
    if is_ftflow_dir(path) or not any(path.iterdir()):
        return path
    raise ConfigError(
        f"{key_name}: {path} already holds files that ftflow did not write; ftflow replaces its output "
        "folders, so it never writes into one it did not create. Choose a new or empty folder"
    )


def check_writable(path: str | Path, key_name: str) -> None:
    """Fail now, naming the key, when `path` (or the folder that would be created for it) is not writable."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key_name}: cannot create {path}: {existing} is a file, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".ftflow-write-test-", dir=existing)
        os.rmdir(probe)
    except OSError as exc:
        raise ConfigError(f"{key_name}: {path} is not writable ({exc.strerror or exc}: {existing})") from None


def check_outputs(cfg: PipelineConfig) -> None:
    """Before any work: the workdir is writable and the chosen output folders are ftflow's to fill."""
    check_writable(cfg.workdir_path, "workdir")
    for key_name, chosen in (
        ("train.output_dir", cfg.train.output_dir),
        ("export.export_dir", cfg.export.export_dir),
    ):
        if chosen:
            target = claim_output_dir(cfg.resolve_path(chosen), key_name)
            check_writable(target, key_name)


def resolve_adapter_dir(path: str | Path, key_name: str = "model.adapter_name_or_path") -> Path:
    """The folder holding adapter_config.json: `path` itself, or `<path>/model`, where ftflow's train
    step puts it (so the output_dir a LLaMA-Factory user names works as the adapter path)."""
    given = Path(path).expanduser().absolute()
    for candidate in (given, given / "model"):
        if (candidate / "adapter_config.json").is_file():
            return candidate.resolve()
    if not given.is_dir():
        raise ConfigError(f"{key_name}: {given} does not exist")
    raise ConfigError(f"{key_name}: {given} has no adapter_config.json (nor has {given / 'model'})")
