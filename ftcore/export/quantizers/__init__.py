"""Quantized export: the merged model -> a quantized Hugging Face folder that vLLM serves.

One entry per method in METHODS. llm-compressor and gptqmodel pin other torch / transformers than
ftflow, so they run as standalone scripts (this folder's `*_run.py`, importing nothing from ftflow) in
their side virtualenvs (ftcore.venvs); bitsandbytes nf4 runs in this process. Every method gets the
same JSON arguments and writes into the folder it is given; the step renames it into place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ftcore.config.sections import ExportConfig
from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.export")

HERE = Path(__file__).resolve().parent
SIDE_ENV_METHODS = ("llmcompressor", "gptqmodel")  # method name == side environment name
SCRIPT_TIMEOUT_S = 3 * 3600.0


@dataclass(frozen=True)
class Quantization:
    """The resolved quantization settings (defaults filled in): what the step keys and runs."""

    method: str
    bit: int
    scheme: str | None
    group_size: int
    nsamples: int
    maxlen: int
    dataset: str | None

    @property
    def needs_calibration(self) -> bool:
        return self.method in SIDE_ENV_METHODS

    def tags(self) -> dict[str, str]:
        """Registry tags of the quantized sub-artifact."""
        return {
            "ftflow.quantization.method": self.method,
            "ftflow.quantization.bit": str(self.bit),
            "ftflow.quantization.scheme": self.scheme or "",
        }


def resolve(export: ExportConfig) -> Quantization:
    """Fill the defaults: method gptqmodel when only the bit is set (LLaMA-Factory's behaviour), 4 bits,
    llm-compressor's scheme from the bit. No validation here (see `check`)."""
    method = export.export_quantization_method
    if method is None:
        method = "gptqmodel" if export.export_quantization_bit else "none"
    bit = export.export_quantization_bit or 4
    scheme = None
    if method == "llmcompressor":
        scheme = export.export_quantization_scheme or ("W4A16" if bit == 4 else "W8A8")
        bit = 4 if scheme.startswith("W4") else 8
    elif method == "bnb":
        scheme = "nf4"
    return Quantization(
        method=method,
        bit=bit,
        scheme=scheme,
        group_size=export.export_quantization_group_size,
        nsamples=export.export_quantization_nsamples,
        maxlen=export.export_quantization_maxlen,
        dataset=export.export_quantization_dataset,
    )


def enabled(export: ExportConfig) -> bool:
    return resolve(export).method != "none"


def check(export: ExportConfig, side_env: bool = True) -> None:
    """Refuse what cannot work, naming the key, before any heavy work (preflight calls this); with
    `side_env`, also a method whose side virtualenv is not installed."""
    q = resolve(export)
    if q.method == "none":
        return
    key = "export.export_quantization_method"
    if not export.merge:
        raise ConfigError(
            f"{key}: {q.method} quantizes the merged model, but export.merge is false: merge first "
            "(set export.merge: true), then quantize"
        )
    bit, scheme = export.export_quantization_bit, export.export_quantization_scheme
    if q.method == "bnb" and bit not in (None, 4):
        raise ConfigError(f"export.export_quantization_bit: bnb export supports 4 (nf4) only here, got {bit}")
    if scheme is not None and q.method != "llmcompressor":
        raise ConfigError(
            f"export.export_quantization_scheme: {scheme} applies to llmcompressor only, not {q.method}"
        )
    if q.method == "llmcompressor" and bit is not None and scheme is not None and int(scheme[1]) != bit:
        raise ConfigError(
            f"export.export_quantization_scheme: {scheme} has {scheme[1]}-bit weights but "
            f"export.export_quantization_bit is {bit}"
        )
    if side_env and q.method in SIDE_ENV_METHODS:
        from ftcore import venvs

        venvs.require(q.method)  # a missing side environment says how to install it
    if q.method == "bnb":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{key}: bnb needs the bitsandbytes package (`pip install bitsandbytes`)"
            ) from None


def quantize_model(
    q: Quantization,
    model_dir: Path,
    out_dir: Path,
    calibration: Path | None,
    log_path: Path,
    trust_remote_code: bool = False,
) -> None:
    """Write `model_dir` quantized by `q` into `out_dir` (an empty temp folder the caller renames), with
    the merged folder's tokenizer, chat template and generation config beside the weights."""
    METHODS[q.method](q, model_dir, out_dir, calibration, log_path, trust_remote_code)
    carry_files(model_dir, out_dir)


# weights and their index come from the quantizer; the manifest is the step's own
_NOT_CARRIED = (".safetensors", ".bin", ".index.json", ".pt")


def carry_files(model_dir: Path, out_dir: Path) -> None:
    """Copy the merged folder's other files (tokenizer, chat template, generation config, lineage) that
    the quantizer did not write itself."""
    import shutil

    from ftcore.artifacts import MANIFEST

    for item in Path(model_dir).iterdir():
        carried = item.is_file() and item.name != MANIFEST and not item.name.endswith(_NOT_CARRIED)
        if carried and not (out_dir / item.name).exists():
            shutil.copy2(item, out_dir / item.name)


def _side_env(
    q: Quantization, model_dir: Path, out_dir: Path, calibration: Path | None, log_path: Path, trust: bool
) -> None:
    from ftcore import venvs

    args = {
        **asdict(q),
        "model_dir": str(model_dir),
        "out_dir": str(out_dir),
        "calibration": str(calibration) if calibration else None,
        "trust_remote_code": trust,
    }
    args_file = log_path.with_suffix(".args.json")  # kept beside the log: the run can be repeated by hand
    args_file.parent.mkdir(parents=True, exist_ok=True)
    args_file.write_text(json.dumps(args, indent=2))
    venvs.run_script(q.method, HERE / f"{q.method}_run.py", [str(args_file)], log_path, SCRIPT_TIMEOUT_S)


def _bnb(
    q: Quantization, model_dir: Path, out_dir: Path, calibration: Path | None, log_path: Path, trust: bool
) -> None:
    from ftcore.export.quantizers.bnb import quantize_nf4

    quantize_nf4(model_dir, out_dir, trust)


# method -> runner(settings, merged folder, output folder, calibration JSONL, log file, trust_remote_code)
METHODS: dict[str, Callable[[Quantization, Path, Path, Path | None, Path, bool], None]] = {
    "llmcompressor": _side_env,
    "gptqmodel": _side_env,
    "bnb": _bnb,
}
