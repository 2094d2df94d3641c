"""Typed config: one section per step, composed into PipelineConfig, loaded from YAML."""

from ftcore.config.loader import dump_config, load_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import (
    DataConfig,
    EvalConfig,
    ExportConfig,
    LoraConfig,
    ModelConfig,
    RegistryConfig,
    ServeConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "LoraConfig",
    "ModelConfig",
    "PipelineConfig",
    "RegistryConfig",
    "ServeConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
]
