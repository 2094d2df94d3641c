"""Each pipeline step's version, bumped in the same commit as a change that can change its output.

A step's version is part of its cache key, so a fix to label masking or to a processor re-runs that
step (and, through the fingerprints, everything after it) instead of reusing results made by the old
code. The source files that decide each step's output are listed here; tests/data/step_versions.json
records their hashes beside the version, and tests/test_keys.py fails when a file changed while its
step's version did not. After a change:

- if the step's output can change, bump its number in STEP_VERSIONS;
- either way, re-record: `python -m ftcore.step_versions --record`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the folder that holds the ftcore package
RECORD = ROOT / "tests" / "data" / "step_versions.json"

STEP_VERSIONS: dict[str, int] = {
    "fetch_model": 1,
    "fetch_dataset": 3,
    "preprocess": 4,
    "train": 4,
    "evaluate": 5,
    "merge": 4,
    "quantize": 1,
    "register": 4,
}

# Files (globs relative to ROOT) whose code decides a step's output. Template DATA
# (templates.yaml) is not listed: the preprocess key holds each template's definition itself.
STEP_SOURCES: dict[str, tuple[str, ...]] = {
    "fetch_model": ("ftcore/steps/fetch.py", "ftcore/hub.py", "ftcore/builtin.py"),
    "fetch_dataset": (
        "ftcore/steps/fetch.py",
        "ftcore/data/loader.py",
        "ftcore/data/sources.py",
        "ftcore/data/converter.py",
        "ftcore/data/splits.py",
    ),
    "preprocess": (
        "ftcore/steps/preprocess.py",
        "ftcore/data/processor.py",
        "ftcore/data/template.py",
        "ftcore/data/thinking.py",
        "ftcore/data/tools.py",
    ),
    "train": (
        "ftcore/steps/train.py",
        "ftcore/train/*.py",
        "ftcore/train/methods/*.py",
        "ftcore/train/ppo/*.py",
        "ftcore/modeling.py",
        "ftcore/data/collator.py",
        "ftcore/data/packing.py",
    ),
    "evaluate": (
        "ftcore/steps/evaluate.py",
        "ftcore/evaluate/*.py",
        "ftcore/evaluate/tasks/*/*.yaml",  # ftflow's own benchmark tasks: YAML, loader, questions
        "ftcore/evaluate/tasks/*/*.py",
        "ftcore/evaluate/tasks/*/*.jsonl",
        "ftcore/modeling.py",
    ),
    "merge": ("ftcore/steps/merge.py", "ftcore/export/*.py"),
    "quantize": ("ftcore/steps/quantize.py", "ftcore/export/quantizers/*.py"),
    "register": ("ftcore/steps/register.py", "ftcore/registry.py"),
}


def source_hashes(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """{step: {file: sha256}} of the files listed in STEP_SOURCES, under `root`."""
    hashes: dict[str, dict[str, str]] = {}
    for step, patterns in STEP_SOURCES.items():
        files = sorted({p for pattern in patterns for p in Path(root).glob(pattern) if p.is_file()})
        hashes[step] = {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
        }
    return hashes


def current_record(root: Path = ROOT) -> dict[str, Any]:
    """What `--record` writes: each step's version and its source files' hashes."""
    return {
        step: {"version": STEP_VERSIONS[step], "files": files} for step, files in source_hashes(root).items()
    }


def stale_steps(recorded: dict[str, Any], root: Path = ROOT) -> list[str]:
    """One message per step whose sources or version differ from the record (empty: all current)."""
    problems = []
    how = "then re-record with `python -m ftcore.step_versions --record`"
    for step, now in current_record(root).items():
        old = recorded.get(step)
        if old is None:
            problems.append(f"{step}: not recorded yet; {how}")
            continue
        changed = sorted(
            name
            for name in set(old["files"]) | set(now["files"])
            if old["files"].get(name) != now["files"].get(name)
        )
        if changed and old["version"] == now["version"]:
            problems.append(
                f"{step} changed ({', '.join(changed)}) but its version is still {now['version']}: "
                f"if its output can change, bump STEP_VERSIONS['{step}'] in ftcore/step_versions.py; " + how
            )
        elif changed or old["version"] != now["version"]:
            problems.append(f"{step}: version {old['version']} -> {now['version']} not recorded; {how}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftcore.step_versions", description=__doc__)
    parser.add_argument("--record", action="store_true", help=f"write {RECORD.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(current_record(), indent=2, sort_keys=True) + "\n")
        print(f"recorded {RECORD}")
        return 0
    problems = stale_steps(json.loads(RECORD.read_text())) if RECORD.is_file() else ["no record yet"]
    print("\n".join(problems) or "every step's version matches its sources")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
