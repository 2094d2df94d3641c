"""Many training processes: the resolved `train.distributed` settings, their config-time checks, the
TrainingArguments they add, and what only rank 0 does.

torchrun / accelerate start one worker per process (ftcore.train.launch.worker_command); every rank
runs the same ftcore.train.job.run_training. Ranks find themselves through torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK); rank 0 alone opens the MLflow run and writes the model and manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import DistributedConfig, TrainConfig
from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.train")

ROOT = Path(__file__).resolve().parents[2]  # the source checkout: configs/deepspeed, configs/fsdp

# LLaMA-Factory's environment variables -> train.distributed fields (they win over the YAML, as there)
ENV_FIELDS = {
    "NPROC_PER_NODE": "nproc_per_node",
    "NNODES": "nnodes",
    "NODE_RANK": "node_rank",
    "MASTER_ADDR": "master_addr",
    "MASTER_PORT": "master_port",
}

# Optimizer options that update one layer at a time inside backward hooks: they cannot work with
# gradients averaged across processes (LLaMA-Factory refuses the same). (section, field, LF key)
SINGLE_PROCESS_OPTIONS = (
    ("galore", "layerwise", "galore_layerwise"),
    ("apollo", "layerwise", "apollo_layerwise"),
)


def resolve_distributed(d: DistributedConfig, env: Mapping[str, str] | None = None) -> DistributedConfig:
    """The settings with LLaMA-Factory's environment variables applied: FORCE_TORCHRUN=1 picks torchrun,
    NPROC_PER_NODE / NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT set those fields."""
    env = os.environ if env is None else env
    values = d.model_dump()
    for var, field in ENV_FIELDS.items():
        if env.get(var):
            values[field] = env[var]
    if env.get("FORCE_TORCHRUN", "").strip().lower() in ("1", "true", "yes") and values["launcher"] == "none":
        values["launcher"] = "torchrun"
    try:
        return DistributedConfig.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"train.distributed (with its environment variables): {exc}") from None


def world_size_of(d: DistributedConfig) -> int:
    """How many processes train: 1 unless a launcher starts nproc_per_node x nnodes."""
    return 1 if d.launcher == "none" else d.nproc_per_node * d.nnodes


def find_file(cfg: PipelineConfig, value: str, field: str) -> Path:
    """A config file named by `field`: as given (current folder, then the YAML's folder), else the one
    ftflow ships under the same relative path (configs/deepspeed/..., configs/fsdp/...)."""
    path = cfg.resolve_input(value)
    if not path.is_file() and not Path(value).is_absolute() and (ROOT / value).is_file():
        path = ROOT / value
    if not path.is_file():
        raise ConfigError(f"train.distributed.{field}: config file {path} does not exist")
    return path


def sharding(cfg: PipelineConfig) -> dict[str, Any]:
    """The TrainingArguments that shard the model (deepspeed as a dict; fsdp + fsdp_config), read from
    their files: what the train key holds, so editing a file retrains, and what the worker passes on."""
    d = cfg.train.distributed
    if d.deepspeed:
        path = find_file(cfg, d.deepspeed, "deepspeed")
        try:
            config = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"train.distributed.deepspeed: {path} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"train.distributed.deepspeed: {path} must hold a JSON object")
        return {"deepspeed": config}
    if d.fsdp:
        options, config = d.fsdp, dict(d.fsdp_config or {})
        if isinstance(options, str) and options.endswith((".yaml", ".yml", ".json")):
            options, config = _fsdp_file(find_file(cfg, options, "fsdp"))
        return {"fsdp": True, "fsdp_config": fsdp_config(options, config)}
    return {}


def _fsdp_file(path: Path) -> tuple[bool | str, dict[str, Any]]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"train.distributed.fsdp: {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("fsdp"), (bool, str)):
        raise ConfigError(
            f"train.distributed.fsdp: {path} must set `fsdp` (true or an option string such as "
            "'full_shard auto_wrap') and may hold an `fsdp_config` mapping"
        )
    extra = loaded.get("fsdp_config") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"train.distributed.fsdp: {path}: fsdp_config must be a mapping")
    return loaded["fsdp"], dict(extra)


def fsdp_config(options: bool | str, config: dict[str, Any]) -> dict[str, Any]:
    """transformers' fsdp_config for FSDP2, with LLaMA-Factory's option string ('full_shard auto_wrap
    offload') translated as transformers does (it deprecates the string form)."""
    config = {key.removeprefix("fsdp_"): value for key, value in config.items()}
    words = options.split() if isinstance(options, str) else []
    for word in words:
        if word in ("full_shard", "shard_grad_op"):
            config.setdefault("reshard_after_forward", word == "full_shard")
        elif word == "offload":
            config.setdefault("cpu_offload", True)
        elif word != "auto_wrap":  # auto_wrap: transformer layers are wrapped by default
            raise ConfigError(
                f"train.distributed.fsdp: option '{word}' is not supported by FSDP2; use full_shard, "
                "shard_grad_op, offload and auto_wrap"
            )
    return config


def check_distributed(cfg: PipelineConfig) -> None:
    """Config-time errors (preflight): files that are missing or malformed, options that need one
    process, DeepSpeed without the GPU it needs."""
    d = resolve_distributed(cfg.train.distributed)
    args = sharding(cfg)
    if (d.deepspeed or d.fsdp) and d.launcher == "none":
        field = "deepspeed" if d.deepspeed else "fsdp"
        raise ConfigError(
            f"train.distributed.{field} needs a launcher: set train.distributed.launcher to torchrun or "
            "accelerate (or FORCE_TORCHRUN=1)"
        )
    if world_size_of(d) > 1:
        for section, field, lf_key in SINGLE_PROCESS_OPTIONS:
            if getattr(getattr(cfg.train, section, None), field, False):
                raise ConfigError(
                    f"train.{section}.{field} ({lf_key}) updates layers inside backward and cannot train "
                    f"with train.distributed.nproc_per_node={d.nproc_per_node} x nnodes={d.nnodes}; use "
                    f"one process or turn {lf_key} off"
                )
    if "deepspeed" in args:
        check_deepspeed_runs(args["deepspeed"])


def check_deepspeed_runs(config: dict[str, Any]) -> None:
    """Without CUDA, DeepSpeed's CPU accelerator JIT-compiles its C++ shared-memory collectives in the
    first run (cached in ~/.cache/torch_extensions; 18 minutes on the loaded 2-core test machine, then
    ZeRO-2 trained there with the same losses as DDP). Without a compiler it cannot: say so now."""
    import shutil

    import torch

    if torch.cuda.is_available():
        return
    missing = [tool for tool in ("c++", "ninja") if shutil.which(tool) is None]
    stage = (config.get("zero_optimization") or {}).get("stage", 0)
    if stage == 3:
        raise ConfigError(
            "train.distributed.deepspeed: ZeRO-3 without a GPU trained and checkpointed here but hung while "
            "gathering the final weights; on CPUs use ds_z0 / ds_z2 configs or train.distributed.fsdp"
        )
    if missing:
        raise ConfigError(
            f"train.distributed.deepspeed: DeepSpeed on CPUs compiles its C++ ops at start-up and needs "
            f"{' and '.join(missing)} on PATH; install them, or use train.distributed.fsdp (FSDP2) or "
            "plain DDP on CPUs"
        )
    log.warning(
        "train.distributed.deepspeed without a GPU: the first run compiles DeepSpeed's CPU ops (minutes)"
    )


def worker_settings(cfg: PipelineConfig) -> DistributedConfig:
    """What the worker trains with: the environment applied, the DeepSpeed file as an absolute path and
    an FSDP file expanded into fsdp + fsdp_config, so TrainingArguments needs no file lookups."""
    d = resolve_distributed(cfg.train.distributed)
    args = sharding(cfg)
    if d.deepspeed:
        return d.model_copy(update={"deepspeed": str(find_file(cfg, d.deepspeed, "deepspeed"))})
    if d.fsdp:
        return d.model_copy(update={"fsdp": True, "fsdp_config": args["fsdp_config"]})
    return d


def training_args(cfg: TrainConfig, use_cpu: bool) -> dict[str, Any]:
    """TrainingArguments fields for many processes (empty for one plain process): gloo on CPU, the
    collective timeout, DeepSpeed / FSDP as worker_settings resolved them. Every objective that
    builds TrainingArguments (or a TRL config) adds these."""
    d = cfg.distributed
    if world_size() == 1 and not (d.deepspeed or d.fsdp):
        return {}
    # every trainable weight is used in each forward, so DDP skips its unused-parameter search
    args: dict[str, Any] = {"ddp_timeout": d.ddp_timeout, "ddp_find_unused_parameters": False}
    if use_cpu:
        args["ddp_backend"] = "gloo"
    if d.deepspeed:
        args["deepspeed"] = d.deepspeed
    if d.fsdp:
        args["fsdp"] = True
        args["fsdp_config"] = dict(d.fsdp_config or {})
    return args


def enable_fsdp_on_cpu() -> None:
    """accelerate 1.15 turns its FSDP plugin on only for accelerator devices: on CPUs it silently trains
    plain DDP instead. torch's FSDP2 itself shards on CPUs over gloo, so when the Trainer hands
    accelerate an FSDP plugin in a CPU group, take the FSDP path it would take on GPUs. Called by the
    worker only when train.distributed.fsdp is set and there is no GPU."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_ftflow_cpu_fsdp", False):
        return
    original_get = Accelerator.get_state_dict

    def get_state_dict(self: Any, model: Any, unwrap: bool = True) -> Any:
        # the Trainer calls this on every rank (a collective); accelerate's own FSDP2 branch keys on
        # the device type and would hand back the local shards on a CPU
        return full_state_dict(model) if is_sharded(model) else original_get(self, model, unwrap)

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    init._ftflow_cpu_fsdp = True  # type: ignore[attr-defined]
    AcceleratorState.__init__ = init  # type: ignore[method-assign]
    Accelerator.get_state_dict = get_state_dict  # type: ignore[method-assign]


def full_state_dict(model: Any) -> dict[str, Any]:
    """Every rank calls this: rank 0 gets the whole model's weights as plain CPU tensors (others: {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the group (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0: the process that tracks, saves and writes the manifest."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_sharded(model: Any) -> bool:
    """FSDP (1 or 2) holds only a shard of each weight per rank: saving needs a gather first."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        return True
    dtensor = getattr(torch.distributed.tensor, "DTensor", None)
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def model_to_save(model: Any, rebuild: Callable[[], Any]) -> Any | None:
    """Every rank calls this after training. Rank 0 gets a plain model with the full trained weights
    (DDP: the model itself; FSDP: a fresh `rebuild()` loaded from the gathered full state dict);
    the other ranks get None."""
    if world_size() == 1:
        return model
    if _zero3(model):
        return _zero3_to_save(model, rebuild)
    if not is_sharded(model):
        return model if is_main() else None
    log.info("gathering the FSDP shards of %d processes into one model on rank 0", world_size())
    state = full_state_dict(model)
    if not is_main():
        return None
    fresh = rebuild()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    if unexpected or [name for name in missing if "lora_" in name or not _frozen(fresh, name)]:
        raise RuntimeError(
            f"FSDP state dict does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    return fresh


def _zero3(model: Any) -> bool:
    """DeepSpeed ZeRO-3 partitions every weight (its parameters carry ds_id)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _zero3_to_save(model: Any, rebuild: Callable[[], Any]) -> Any | None:
    """Gather ZeRO-3's partitions on every rank (a collective), copy them out on rank 0."""
    import deepspeed

    log.info("gathering the ZeRO-3 partitions of %d processes into one model on rank 0", world_size())
    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if is_main() else None
    if state is None:
        return None
    fresh = rebuild()
    fresh.load_state_dict(state, strict=False)
    return fresh


def _frozen(model: Any, name: str) -> bool:
    param = dict(model.named_parameters()).get(name)
    return param is not None and not param.requires_grad
