"""The whole job's config: one section per stage, plus the job's name and working directory."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ftcore.config.sections import (
    DataConfig,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    RegisterConfig,
    Section,
    ServeConfig,
    TrainConfig,
)


class PipelineConfig(Section):
    name: str = Field("ftflow-job", description="Job name; names the workdir and the MLflow run.")
    workdir: str | None = Field(
        None,
        description="Folder for all artifacts of this job; defaults to runs/<name> under the current folder.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model to fine-tune.")
    data: DataConfig = Field(default_factory=DataConfig, description="Datasets, template and tokenization.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training stage and method.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation on the held-out split.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="LoRA merge and export.")
    register: RegisterConfig = Field(default_factory=RegisterConfig, description="MLflow model registry.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="OpenAI-compatible serving.")

    # Where the config came from, so relative paths (dataset_dir, output_dir) resolve against the YAML's
    # folder when it is not the current one. Not part of any cache key.
    base_dir: str | None = Field(
        None, description="Folder that relative paths resolve against.", exclude=True
    )

    def resolve_path(self, value: str | Path) -> Path:
        """Absolute path for a config value, relative to the config file's folder or the current one."""
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        return (Path(self.base_dir) if self.base_dir else Path.cwd()) / path

    @property
    def workdir_path(self) -> Path:
        return self.resolve_path(self.workdir or Path("runs") / self.name).resolve()
