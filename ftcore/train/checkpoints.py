"""Finding the checkpoint to resume from, trusting only checkpoints that were completely written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ftcore.errors import ConfigError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = (
    "adapter_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "policy.safetensors",
)


def is_complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last: if it parses and weights exist, the rest is there."""
    state = path / "trainer_state.json"
    if not state.is_file() or not any((path / name).is_file() for name in _WEIGHTS):
        return False
    try:
        json.loads(state.read_text())
    except ValueError:
        return False
    return True


def last_complete_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint with the highest step in `directory`, if any."""
    if not directory.is_dir():
        return None
    found = []
    for child in directory.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and is_complete_checkpoint(child):
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def resolve_resume(setting: str | None, checkpoint_dir: Path) -> Path | None:
    """Map train.resume_from_checkpoint ('auto', a path or null) to a checkpoint path or None."""
    if setting is None or str(setting).lower() in ("", "none", "null", "false"):
        return None
    if str(setting).lower() == "auto":
        return last_complete_checkpoint(checkpoint_dir)
    path = Path(setting).expanduser()
    if not path.is_dir():
        raise ConfigError(f"train.resume_from_checkpoint: {path} does not exist")
    if not is_complete_checkpoint(path):
        raise ConfigError(f"train.resume_from_checkpoint: {path} is not a complete checkpoint")
    return path


def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """After a successful train, delete all but the last `keep` checkpoint-N folders in `directory`
    (the train step's own checkpoints folder; nothing else there or elsewhere is touched)."""
    import shutil

    if not directory.is_dir():
        return []
    found = sorted(
        (int(match.group(1)), child)
        for child in directory.iterdir()
        if child.is_dir() and (match := _CHECKPOINT.match(child.name))
    )
    doomed = [path for _, path in found[: max(len(found) - keep, 0)]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed
