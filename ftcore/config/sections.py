"""One pydantic model per pipeline step.

Every field carries a description: the same text feeds `ft config show --help-fields`, the Prefect UI
form and the docs. `extra="forbid"` turns a typo into an error that names the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator


def _split_commas(value: object) -> object:
    """LLaMA-Factory and the command line write lists as 'a,b,c'."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list of names that also accepts one comma-separated string.
NameList = Annotated[list[str], BeforeValidator(_split_commas)]


class Section(BaseModel):
    """Base for all config sections: unknown keys are errors, values are validated on assignment."""

    # coerce_numbers_to_str: `model.revision=20240101` on the command line is a revision, not an error
    # validate_default: a default is coerced like a value from YAML (an int default of a float field
    # becomes a float), so a config dumped and loaded again keys its steps the same
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        protected_namespaces=(),
        coerce_numbers_to_str=True,
    )


class ModelConfig(Section):
    name_or_path: str = Field(
        "builtin:tiny-qwen2",
        description="Model reference: a local path, hf:org/name[@revision], ms:org/name[@revision] "
        "(ModelScope) or builtin:NAME (tiny random models built locally, for tests and the quickstart).",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit); overrides an @revision in the reference."
    )
    adapter_name_or_path: str | None = Field(
        None, description="An existing LoRA adapter directory to evaluate or merge instead of training one."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off unless you trust the repository."
    )
    cache_dir: str | None = Field(
        None, description="Where hub downloads live; defaults to HF_HUB_CACHE / MODELSCOPE_CACHE."
    )


class DataConfig(Section):
    dataset: NameList = Field(
        default_factory=lambda: ["demo_alpaca", "identity"],
        description="Training dataset names from dataset_dir/dataset_info.json (LLaMA-Factory format).",
    )
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json and the data files.")
    eval_dataset: NameList = Field(
        default_factory=list,
        description="Held-out dataset names for evaluation; when empty, val_size splits one off.",
    )
    val_size: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of the training rows held out when eval_dataset is empty."
    )
    template: str | None = Field(
        None, description="Chat template name (qwen, llama3, ...); defaults to the model's own."
    )
    cutoff_len: int = Field(1024, gt=8, description="Maximum tokens per example after templating.")
    max_samples: int | None = Field(None, gt=0, description="Use at most this many rows of each dataset.")
    train_on_prompt: bool = Field(False, description="Also compute loss on prompt tokens (no masking).")
    seed: int = Field(42, description="Seed for the train / validation split and shuffling.")
    preprocessing_num_workers: int | None = Field(
        None,
        gt=0,
        description="Processes that tokenize the rows (datasets.map num_proc); the token ids are the "
        "same for any number. Default: one, in the step's own process.",
    )


class LoraConfig(Section):
    rank: int = Field(8, gt=0, description="LoRA rank r.")
    alpha: int | None = Field(None, gt=0, description="LoRA alpha; defaults to 2 x rank.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target: NameList = Field(
        default_factory=lambda: ["all"],
        description="Module names to adapt; 'all' means every linear layer except the output head.",
    )


class DistributedConfig(Section):
    """How many processes train one job. LLaMA-Factory's environment variables FORCE_TORCHRUN,
    NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT are honoured too (they win over
    these fields: ftcore.train.distributed.resolve_distributed)."""

    launcher: Literal["none", "torchrun", "accelerate"] = Field(
        "none",
        description="none: one worker process; torchrun or accelerate: nproc_per_node x nnodes processes "
        "(DDP, or FSDP / DeepSpeed when configured). FORCE_TORCHRUN=1 means torchrun.",
    )
    nproc_per_node: int = Field(
        1, gt=0, description="Processes on this machine (one per GPU; on CPU, gloo; env NPROC_PER_NODE)."
    )
    nnodes: int = Field(1, gt=0, description="Machines in the group (env NNODES).")
    node_rank: int = Field(0, ge=0, description="This machine's index, 0..nnodes-1 (env NODE_RANK).")
    master_addr: str = Field(
        "127.0.0.1",
        description="Address of node 0's rendezvous (env MASTER_ADDR); many nodes need a real one.",
    )
    master_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="Rendezvous port (env MASTER_PORT); unset: a free port (one node) or 29500 (many nodes).",
    )
    deepspeed: str | None = Field(
        None,
        description="DeepSpeed JSON config file (LLaMA-Factory's `deepspeed`), e.g. "
        "configs/deepspeed/ds_z2_config.json; needs a CUDA GPU (DeepSpeed does not train on this CPU build).",
    )
    fsdp: bool | str | None = Field(
        None,
        description="FSDP (PyTorch FSDP2): true, a YAML/JSON file from configs/fsdp/ (fsdp + fsdp_config), "
        "or transformers' option string, e.g. 'full_shard auto_wrap' (offload: parameters on the CPU).",
    )
    fsdp_config: dict[str, Any] | None = Field(
        None, description="transformers' fsdp_config dict when `fsdp` is an option string."
    )
    ddp_timeout: int = Field(
        1800, gt=0, description="Seconds a collective may wait for the other processes before failing."
    )

    @model_validator(mode="after")
    def _one_sharding(self) -> DistributedConfig:
        if self.deepspeed and self.fsdp:
            raise ValueError(
                f"deepspeed ({self.deepspeed}) and fsdp ({self.fsdp}) are both set; pick one of them"
            )
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self


class TrainConfig(Section):
    stage: Literal["sft"] = Field(
        "sft", description="Training objective (LLaMA-Factory's `stage`). sft: supervised fine-tuning."
    )
    finetuning_type: Literal["lora", "full"] = Field(
        "lora", description="lora: train an adapter; full: all weights."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (finetuning_type=lora).")
    output_dir: str | None = Field(
        None, description="Where checkpoints and the trained model go; defaults to a folder in the workdir."
    )
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    num_train_epochs: float = Field(
        3.0, gt=0, description="Epochs over the training set (ignored if max_steps > 0)."
    )
    max_steps: int = Field(-1, description="Total optimizer steps; -1 means use num_train_epochs.")
    per_device_train_batch_size: int = Field(4, gt=0, description="Examples per device per step.")
    per_device_eval_batch_size: int = Field(8, gt=0, description="Examples per device per eval step.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Micro-batches accumulated per optimizer step."
    )
    lr_scheduler_type: str = Field(
        "cosine", description="transformers scheduler name (linear, cosine, constant...)."
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    logging_steps: int = Field(10, gt=0, description="Log loss every N steps.")
    save_steps: int = Field(100, gt=0, description="Write a checkpoint every N steps.")
    save_total_limit: int | None = Field(
        3, gt=0, description="Keep at most this many checkpoints while training."
    )
    keep_checkpoints: int = Field(
        1,
        ge=0,
        description="Checkpoints kept after a successful train (the last N; 0 deletes all). The final "
        "model is in output_dir/model either way; a kept checkpoint lets a longer run continue from it.",
    )
    bf16: bool | None = Field(
        None, description="bf16 mixed precision; default: on where the hardware supports it."
    )
    fp16: bool = Field(False, description="fp16 mixed precision (CUDA only).")
    seed: int = Field(42, description="Training seed.")
    resume_from_checkpoint: str | None = Field(
        "auto",
        description="'auto': resume from the last complete checkpoint in output_dir if any; a path: that "
        "checkpoint; null: always start from step 0.",
    )
    report_to: NameList = Field(
        default_factory=lambda: ["mlflow"], description="Experiment trackers; 'mlflow' or 'none'."
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="Many processes: torchrun / accelerate, DDP, FSDP, DeepSpeed.",
    )


class EvalConfig(Section):
    enabled: bool = Field(True, description="Run the evaluate step.")
    compare_base: bool = Field(
        True, description="Also evaluate the base model, to show what the fine-tune changed."
    )
    batch_size: int = Field(
        8, gt=0, description="Examples per forward pass, for loss / perplexity and for generation."
    )
    max_samples: int | None = Field(64, gt=0, description="Evaluate on at most this many held-out rows.")
    generation_samples: int = Field(
        16, ge=0, description="Held-out prompts to answer, scored by BLEU-4, ROUGE-1/2/L and exact match."
    )
    max_new_tokens: int = Field(32, gt=0, description="Generation length limit.")
    do_sample: bool = Field(
        False, description="Sample answers (temperature / top_p / top_k apply) instead of greedy decoding."
    )
    temperature: float = Field(0.95, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(0.7, gt=0, le=1, description="Nucleus sampling: keep this much probability mass.")
    top_k: int = Field(50, ge=0, description="Sample among the k likeliest tokens (0: no limit).")
    num_beams: int = Field(1, ge=1, description="Beam search width (1: no beam search).")
    repetition_penalty: float = Field(
        1.0, gt=0, description="Penalty on tokens already generated (1.0: none)."
    )
    seed: int = Field(42, description="Random seed of sampled generation, so a sampled eval is repeatable.")
    tasks: NameList = Field(
        default_factory=list,
        description="lm-evaluation-harness benchmarks (ftflow_mc, ftflow_mc_zh offline; mmlu, cmmlu, "
        "ceval-valid, ... need the Hugging Face Hub or its datasets cache). Scores: <who>/<task>_<metric>.",
    )
    num_fewshot: int | None = Field(
        None, ge=0, description="Few-shot examples per benchmark question (None: each task's default)."
    )
    benchmark_limit: int | None = Field(
        None, gt=0, description="Score at most this many questions per benchmark task (for CPU runs)."
    )
    benchmark_batch_size: int = Field(8, gt=0, description="Benchmark requests per forward pass.")
    endpoint: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) to run the "
        "benchmarks against instead of the in-process model; its key is read from FTFLOW_API_KEY. "
        "A served model can change behind its URL, so such evaluations are never cached.",
    )
    endpoint_model: str | None = Field(
        None, description="The served model name to benchmark at eval.endpoint (default: its first model)."
    )


def _refuse_legacy_format(value: bool) -> bool:
    if value:
        raise ValueError(
            "true asks for PyTorch .bin (pickle) weights, which can run code when loaded; ftflow writes "
            "safetensors only (every loader, vLLM and Ollama included, reads them). Remove the key or set "
            "it to false"
        )
    return value


class ExportConfig(Section):
    # merge settings (the merge step's key); the quantize step's settings follow below
    export_size: float = Field(
        5.0,
        gt=0,
        description="Largest weight shard of the merged model, in GB (LLaMA-Factory's export_size): "
        "bigger models are split into shards plus model.safetensors.index.json.",
    )
    export_device: Literal["cpu", "auto"] = Field(
        "cpu", description="Where the merge runs: cpu, or auto (the GPU when there is one)."
    )
    export_legacy_format: Annotated[bool, AfterValidator(_refuse_legacy_format)] = Field(
        False, description="LLaMA-Factory's switch to .bin weights; only false is accepted (safetensors)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype the merged weights are saved in (LLaMA-Factory's infer_dtype); auto keeps the "
        "base model's own dtype. The merge itself always runs in float32.",
    )
    export_hub_model_id: str | None = Field(
        None,
        description="Hugging Face Hub repo (org/name) the export folder is pushed to, in one commit, "
        "by the `push` step; the token comes from the HF_TOKEN environment variable.",
    )
    export_hub_private: bool = Field(False, description="Create the Hub repo as private when it is new.")
    merge: bool = Field(
        True, description="Merge the LoRA adapter into the base model (no-op for full tuning)."
    )
    export_dir: str | None = Field(None, description="Where the merged model goes; defaults to the workdir.")
    # quantized export (the quantize step, after merge); names follow LLaMA-Factory's export keys
    export_quantization_method: Literal["none", "llmcompressor", "gptqmodel", "bnb"] | None = Field(
        None,
        description="Quantized export after the merge: llmcompressor (compressed-tensors), gptqmodel (GPTQ) "
        "or bnb (bitsandbytes nf4); none turns it off. Unset: gptqmodel when export_quantization_bit is "
        "set (as LLaMA-Factory does), else none.",
    )
    export_quantization_bit: Literal[4, 8] | None = Field(
        None, description="Weight bits of the quantized export (bnb: 4 only); unset means 4."
    )
    export_quantization_scheme: Literal["W4A16", "W8A8", "W8A16"] | None = Field(
        None,
        description="llm-compressor scheme (llmcompressor only); unset: W4A16 for 4 bits, W8A8 for 8.",
    )
    export_quantization_dataset: str | None = Field(
        None,
        description="Calibration data (llmcompressor, gptqmodel): a dataset name from data.dataset_dir's "
        'dataset_info.json, or a .txt (one text per line) / .jsonl ({"text": ...}) file; unset: the '
        "job's own training rows as the model sees them (chat template applied).",
    )
    export_quantization_nsamples: int = Field(
        128, gt=0, description="How many calibration texts to use (fewer when the data has fewer)."
    )
    export_quantization_maxlen: int = Field(
        1024, gt=0, description="Calibration texts are truncated to this many tokens."
    )
    export_quantization_group_size: int = Field(
        128,
        gt=0,
        description="Weights share one scale per this many input columns (4-bit llmcompressor W4A16 and "
        "gptqmodel); every quantized layer's input width must be a multiple of it.",
    )


class GateRule(Section):
    """One condition of the promotion gate: the candidate must beat the reference on `metric`."""

    metric: str = Field(
        description="Metric the evaluate step records (eval_loss, perplexity, rouge_l, exact_match, ...), "
        "read from the version's metric.tuned/<metric> tag (metric.base/<metric> for the base model)."
    )
    direction: Literal["lower", "higher"] = Field(
        description="Which way is better: lower (losses, perplexity) or higher (ROUGE, accuracy)."
    )
    min_improvement: float = Field(
        0.0,
        description="How much better than the reference the candidate must be: 0 means not worse, a "
        "negative value tolerates that much worse. In the metric's units, or a fraction of the "
        "reference's value when relative is true (0.02 = 2%).",
    )
    relative: bool = Field(False, description="Read min_improvement as a fraction of the reference value.")


def _default_gate() -> list[GateRule]:
    return [GateRule(metric="eval_loss", direction="lower")]


class RegistryConfig(Section):
    enabled: bool = Field(True, description="Register the merged model in the MLflow model registry.")
    model_name: str = Field("ftflow-model", description="Registered model name in MLflow.")
    alias: str = Field("candidate", description="Alias given to the new model version.")
    promote: bool = Field(
        False,
        description="End the pipeline with the promotion gate: the new version becomes 'champion' when "
        "it passes registry.gate (what `ft promote CFG` does by hand).",
    )
    gate: list[GateRule] = Field(
        default_factory=_default_gate,
        min_length=1,
        description="Conditions the candidate must all pass to become champion, compared with the current "
        "champion, or with the base model when there is none, on the same eval set. Example: "
        "[{metric: eval_loss, direction: lower, min_improvement: 0.02, relative: true}, "
        "{metric: rouge_l, direction: higher}].",
    )
    experiment: str = Field("ftflow", description="MLflow experiment that holds the runs.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; MLFLOW_TRACKING_URI wins, default sqlite:///<workdir>/mlflow.db.",
    )


class ServeConfig(Section):
    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when installed, else the transformers backend (same OpenAI API)."
    )
    host: str = Field("127.0.0.1", description="Bind address. Binding beyond localhost requires api_key.")
    port: int = Field(8000, gt=0, lt=65536, description="Port of the OpenAI-compatible server.")
    api_key: SecretStr | None = Field(None, description="Bearer key clients must send; never logged.")
    model_alias: str = Field(
        "champion",
        description="Registry alias `ft serve CFG` serves; when the job's registry has none, the job's own "
        "merged model in its workdir is served.",
    )
    max_model_len: int | None = Field(
        None, gt=0, description="Context limit (prompt + answer tokens); default: the model's own."
    )
    log_dir: str | None = Field(
        None, description="Folder for the server's logs; default <workdir>/serve-logs."
    )
    vllm_python: str | None = Field(
        None,
        description="Interpreter that has vLLM (FTFLOW_VLLM_PYTHON wins); default: the side virtualenv "
        "`ft env install vllm` creates.",
    )
    vllm_args: list[str] = Field(
        default_factory=list,
        description="Extra arguments for vLLM's OpenAI server, e.g. [--enforce-eager] (CPU: readies in ~20 s "
        "instead of ~45 s) or [--gpu-memory-utilization, '0.8'].",
    )
    vllm_kv_cache_gib: float = Field(
        2.0, gt=0, description="vLLM on CPU: GiB of memory for the KV cache (VLLM_CPU_KVCACHE_SPACE)."
    )
    ready_timeout_s: float = Field(
        900.0, gt=0, description="How long vLLM may take to load and answer /health before `ft serve` fails."
    )
