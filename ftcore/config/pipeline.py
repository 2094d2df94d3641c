"""The whole job's config: one section per step, plus the job's name and working directory."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from ftcore.config.sections import (
    DataConfig,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    RegistryConfig,
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
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="Training objective (stage) and method."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation on the held-out split.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="LoRA merge and export.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="MLflow model registry.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="OpenAI-compatible serving.")

    # The YAML file's folder: inputs (dataset_dir) that do not exist relative to the current folder are
    # looked up there, so a config runs from anywhere. Not part of any cache key.
    base_dir: str | None = Field(
        None, description="Folder of the config file, for input paths.", exclude=True
    )

    @model_validator(mode="after")
    def _streaming_needs_max_steps(self) -> PipelineConfig:
        """LLaMA-Factory's rule: a stream has no length, so the run's length is train.max_steps."""
        if self.data.streaming:
            if self.train.max_steps <= 0:
                raise ValueError("data.streaming needs train.max_steps > 0 (a stream has no length)")
            if self.train.stage not in ("sft", "pt"):
                raise ValueError(f"data.streaming supports train.stage sft and pt, not {self.train.stage}")
            speed = self.train.speed
            if self.train.stage == "sft" and (speed.packing or speed.neat_packing):
                raise ValueError(
                    "data.streaming and train.speed.packing / neat_packing cannot be combined: packing "
                    "sorts the whole dataset into rows, a stream is read in order"
                )
        return self

    @model_validator(mode="after")
    def _expand_catalog_name(self) -> PipelineConfig:
        """A catalogue model name becomes its hub reference, and its template the default
        data.template (when ftflow has that template), before any step keys the config."""
        from ftcore.catalog import find_model
        from ftcore.hub import expand_ref

        ref = self.model.name_or_path
        expanded = expand_ref(ref, self.model.hub)
        if expanded != ref:
            entry = find_model(ref)
            self.model.name_or_path = expanded
            if self.data.template is None and entry is not None and entry.template:
                from ftcore.data.template import list_templates

                if entry.template in list_templates():
                    self.data.template = entry.template
        return self

    def resolve_path(self, value: str | Path) -> Path:
        """Absolute path of an output location: relative to the current folder, as in LLaMA-Factory."""
        return Path(value).expanduser().absolute()

    def resolve_input(self, value: str | Path) -> Path:
        """Absolute path of an input: the current folder first, then the config file's folder."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists() or not self.base_dir:
            return path.absolute()
        beside = Path(self.base_dir) / path
        return beside if beside.exists() else path.absolute()

    @property
    def workdir_path(self) -> Path:
        return self.resolve_path(self.workdir or Path("runs") / self.name).resolve()
