"""One pydantic model per pipeline step.

Every field carries a description: the same text feeds `ft config show --help-fields`, the Prefect UI
form and the docs. `extra="forbid"` turns a typo into an error that names the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from ftcore.config.base import NameList, Section, _split_commas
from ftcore.config.methods import (
    ApolloConfig,
    BadamConfig,
    FreezeConfig,
    GaloreConfig,
    QuantizationConfig,
    SpeedConfig,
    check_method_combinations,
)


class ModelConfig(Section):
    name_or_path: str = Field(
        "builtin:tiny-qwen2",
        description="Model reference: a local path, hf:org/name[@revision], ms:org/name[@revision] "
        "(ModelScope), a catalogue name (`ft models`; becomes hf: or ms: by model.hub) or builtin:NAME "
        "(tiny random models built locally, for tests and the quickstart).",
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
    hub: Literal["huggingface", "modelscope"] | None = Field(
        None,
        description="Hub a catalogue name (`ft models`, e.g. Qwen2.5-0.5B-Instruct) resolves to; "
        "default huggingface, or modelscope when USE_MODELSCOPE_HUB=1.",
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
        None,
        description="Chat template name (qwen, llama3, ...; `ft template list`); unset or `auto`: the "
        "model's own (built-in, catalogue entry, config.json model_type, else its tokenizer's template).",
    )
    cutoff_len: int = Field(1024, gt=8, description="Maximum tokens per example after templating.")
    max_samples: int | None = Field(None, gt=0, description="Use at most this many rows of each dataset.")
    train_on_prompt: bool = Field(False, description="Also compute loss on prompt tokens (no masking).")
    mask_history: bool = Field(
        False, description="Compute loss on the last reply of each conversation only (not earlier replies)."
    )
    enable_thinking: bool = Field(
        True,
        description="Reasoning templates (qwen3): false trains without reasoning (the thinking-off "
        "variant, e.g. qwen3_nothink: reasoning dropped, an empty block in the prompt).",
    )
    seed: int = Field(42, description="Seed for the train / validation split and shuffling.")
    preprocessing_num_workers: int | None = Field(
        None,
        gt=0,
        description="Processes that tokenize the rows (datasets.map num_proc); the token ids are the "
        "same for any number. Default: one, in the step's own process.",
    )

    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = Field(
        "concat",
        description="How several datasets mix (LLaMA-Factory's): concat one after another; interleave_under "
        "stops when the first runs out, interleave_over when the last does (oversampling the others).",
    )
    interleave_probs: Annotated[list[float], BeforeValidator(_split_commas)] | None = Field(
        None,
        description="Interleave: the chance of each dataset per row ('0.7,0.3'); default equal turns.",
    )
    on_error: Literal["error", "skip"] = Field(
        "error",
        description="A bad row (malformed, wrong type, roles out of order): error names its file and row; "
        "skip skips it and counts it by reason in the dataset's manifest and `ft data check`.",
    )
    streaming: bool = Field(
        False,
        description="For data larger than memory: rows are read and tokenized in shards and training "
        "iterates them in order (no global shuffle), resuming at its position; needs train.max_steps.",
    )

    @model_validator(mode="after")
    def _mix(self) -> DataConfig:
        probs = self.interleave_probs
        if probs is not None:
            if self.mix_strategy == "concat":
                raise ValueError(
                    "data.interleave_probs needs mix_strategy interleave_under or interleave_over"
                )
            if len(probs) != len(self.dataset):
                raise ValueError(
                    f"data.interleave_probs has {len(probs)} values for {len(self.dataset)} datasets"
                )
            if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"data.interleave_probs must be non-negative and sum to 1, got {probs}")
        return self

    @model_validator(mode="after")
    def _history_or_prompt(self) -> DataConfig:
        if self.mask_history and self.train_on_prompt:
            raise ValueError(
                "data.mask_history and data.train_on_prompt cannot both be true (as in LLaMA-Factory)"
            )
        return self


class LoraConfig(Section):
    rank: int = Field(8, gt=0, description="LoRA rank r.")
    alpha: int | None = Field(None, gt=0, description="LoRA alpha; defaults to 2 x rank.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target: NameList = Field(
        default_factory=lambda: ["all"],
        description="Module names to adapt; 'all' means every linear layer except the output head.",
    )
    additional_target: NameList = Field(
        default_factory=list,
        description="Modules beside the adapter that train in full and are saved with it (peft "
        "modules_to_save), e.g. embed_tokens,lm_head for new tokens.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilized scaling alpha/sqrt(r) instead of alpha/r.")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (magnitude + direction).")
    pissa_init: bool = Field(
        False,
        description="PiSSA: start the adapter from the principal singular vectors of the weights. The saved "
        "adapter is converted to an ordinary LoRA that applies to the ORIGINAL base (merge as usual).",
    )
    pissa_iter: int = Field(16, description="Fast-SVD iterations of PiSSA's init (-1: exact SVD, slower).")
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices learn this many times faster than A (16 is typical)."
    )
    loraplus_lr_embedding: float = Field(
        1e-6, gt=0, description="LoRA+: learning rate of embedding-layer adapters."
    )
    train_adapter: bool = Field(
        False,
        description="With model.adapter_name_or_path: false uses that adapter as the trained result "
        "(evaluate / merge it, no training); true trains it further on the data (LLaMA-Factory's "
        "behaviour when its file has do_train: true, which the flat-key mapping turns into this).",
    )


# train.report_to: ftflow's own MLflow tracking, then the Trainer's integrations
TRACKERS = ("mlflow", "tensorboard", "wandb", "swanlab")


def _known_trackers(value: list[str]) -> list[str]:
    names = [name.lower() for name in value]
    if names in ([], ["none"]):
        return ["none"]
    if names == ["all"]:
        return list(TRACKERS)
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(
            f"unknown tracker {', '.join(unknown)}; choose from {', '.join(TRACKERS)}, all or none"
        )
    return names


class PrefConfig(Section):
    """Preference objectives (rm, dpo, kto, orpo, simpo); LLaMA-Factory's pref_* / kto_* keys."""

    beta: float = Field(
        0.1,
        gt=0,
        description="pref_beta: strength of the preference term (dpo/kto: KL weight to the reference; orpo: "
        "weight of the odds-ratio term; simpo: reward scale).",
    )
    ftx: float = Field(
        0.0, ge=0, description="pref_ftx: weight of an added sft loss on the chosen answers (dpo, kto)."
    )
    loss: Literal["sigmoid", "hinge", "ipo"] = Field(
        "sigmoid", description="pref_loss of dpo: sigmoid (DPO), hinge (SLiC) or ipo (IPO)."
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin gamma.")
    ref_model: str | None = Field(
        None,
        description="dpo/kto reference model (a path or hub reference); default: the frozen base model "
        "(with LoRA: the base with the adapter disabled).",
    )
    kto_chosen_weight: float = Field(
        1.0, gt=0, description="kto: weight of the desirable (chosen) rows' loss."
    )
    kto_rejected_weight: float = Field(
        1.0, gt=0, description="kto: weight of the undesirable (rejected) rows' loss."
    )


class RLConfig(Section):
    """Reinforcement learning settings (stage grpo / ppo); LLaMA-Factory's ppo_* names."""

    reward_model: str | None = Field(
        None,
        description="ppo: the reward model, a folder holding a sequence-classification model (one label, "
        "safetensors; e.g. an rm job's output) or a registry URI models:/NAME@ALIAS.",
    )
    reward_funcs: NameList = Field(
        default_factory=list,
        description="grpo: reward functions, summed with reward_weights: built-ins format "
        "(reward_format_regex matches), length (closeness to reward_length_target tokens), exact_answer "
        "(completion equals the reference response), count:TEXT (occurrences of TEXT), or a user function "
        "pkg.module:function called like TRL's (prompts, completions, completion_ids, **columns) -> floats.",
    )
    reward_weights: list[float] | None = Field(
        None, description="grpo: one weight per reward function; default 1.0 each."
    )
    reward_format_regex: str = Field(
        r"^<think>.*?</think>\s*<answer>.*?</answer>$",
        description="grpo `format` reward: 1.0 when the completion matches this regex (re.DOTALL), else 0.0.",
    )
    reward_length_target: int = Field(
        64, gt=0, description="grpo `length` reward: 1 - |tokens - target| / target, floored at -1."
    )
    num_generations: int = Field(
        4,
        gt=1,
        description="grpo: completions sampled per prompt (the group); the batch size times gradient "
        "accumulation must be a multiple of it.",
    )
    grpo_beta: float = Field(
        0.0, ge=0.0, description="grpo: KL coefficient against the reference (0: no reference model)."
    )
    grpo_epsilon: float = Field(0.2, gt=0, description="grpo: clipping range of the policy ratio.")
    max_new_tokens: int = Field(32, gt=0, description="Tokens generated per completion (grpo and ppo).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_p: float = Field(1.0, gt=0, le=1.0, description="Nucleus sampling of the rollouts.")
    top_k: int = Field(0, ge=0, description="Top-k sampling of the rollouts (0: off).")
    ppo_epochs: int = Field(4, gt=0, description="ppo: optimisation epochs over each batch of rollouts.")
    ppo_buffer_size: int = Field(
        1,
        gt=0,
        description="ppo: rollouts per PPO step, in units of per_device_train_batch_size x "
        "gradient_accumulation_steps (LLaMA-Factory's mini-batches per experience buffer).",
    )
    ppo_target: float = Field(6.0, gt=0, description="ppo: target KL of the adaptive KL controller.")
    ppo_score_norm: bool = Field(
        False, description="ppo: normalise the reward model's scores (running mean/std)."
    )
    ppo_whiten_rewards: bool = Field(False, description="ppo: whiten the per-token rewards before GAE.")
    ppo_init_kl_coef: float = Field(0.2, ge=0, description="ppo: initial KL penalty coefficient.")
    ppo_horizon: float = Field(10000.0, gt=0, description="ppo: horizon of the adaptive KL controller.")
    ppo_gamma: float = Field(1.0, ge=0, le=1.0, description="ppo: discount factor of GAE.")
    ppo_lam: float = Field(0.95, ge=0, le=1.0, description="ppo: lambda of GAE.")
    ppo_cliprange: float = Field(0.2, gt=0, description="ppo: clipping range of the policy ratio.")
    ppo_cliprange_value: float = Field(0.2, gt=0, description="ppo: clipping range of the value update.")
    ppo_vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss.")


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
    stage: Literal["sft", "pt", "rm", "dpo", "kto", "orpo", "simpo", "grpo", "ppo"] = Field(
        "sft",
        description="Training objective (LLaMA-Factory's `stage`). sft: supervised fine-tuning; pt: "
        "continued pre-training on plain text (causal-LM loss on cutoff_len blocks); rm: reward model "
        "(pairwise); dpo, kto, orpo, simpo: preference optimization (settings in train.pref); grpo: group "
        "relative policy optimisation with reward functions; ppo: PPO against a reward model (train.rl).",
    )
    finetuning_type: Literal["lora", "freeze", "full"] = Field(
        "lora",
        description="lora: train an adapter (qlora: with train.quantization.bit); freeze: only some layers; "
        "full: all weights (galore / apollo / badam: full tuning with their optimizer).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (finetuning_type=lora).")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="finetuning_type=freeze settings.")
    quantization: QuantizationConfig = Field(
        default_factory=QuantizationConfig, description="QLoRA: quantized frozen base (bitsandbytes)."
    )
    galore: GaloreConfig = Field(default_factory=GaloreConfig, description="GaLore optimizer (full tuning).")
    apollo: ApolloConfig = Field(default_factory=ApolloConfig, description="APOLLO optimizer (full tuning).")
    badam: BadamConfig = Field(default_factory=BadamConfig, description="BAdam optimizer (full tuning).")
    speed: SpeedConfig = Field(default_factory=SpeedConfig, description="Speed and memory switches.")
    pref: PrefConfig = Field(
        default_factory=PrefConfig, description="Preference stage settings (rm/dpo/kto/...)."
    )
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
    report_to: Annotated[NameList, AfterValidator(_known_trackers)] = Field(
        default_factory=lambda: ["mlflow"],
        description="Experiment trackers: any of mlflow (the job's run and registry), tensorboard, wandb "
        "(offline unless WANDB_MODE says otherwise), swanlab (local unless SWANLAB_MODE says otherwise); "
        "all; or none. The integrations write into the train step's folder.",
    )
    rl: RLConfig = Field(default_factory=RLConfig, description="grpo / ppo settings: rewards, rollouts, PPO.")

    @model_validator(mode="after")
    def _rl_needs_rewards(self) -> TrainConfig:
        """A reward-driven stage without rewards would train on nothing: refuse before any heavy work."""
        if self.stage == "ppo" and not self.rl.reward_model:
            raise ValueError("train.stage: ppo needs train.rl.reward_model (a folder or models:/NAME@ALIAS)")
        if self.stage == "grpo" and not self.rl.reward_funcs:
            raise ValueError("train.stage: grpo needs train.rl.reward_funcs (e.g. [format, length])")
        weights = self.rl.reward_weights
        if weights is not None and len(weights) != len(self.rl.reward_funcs):
            raise ValueError(
                f"train.rl.reward_weights has {len(weights)} values for {len(self.rl.reward_funcs)} "
                "train.rl.reward_funcs"
            )
        return self

    @model_validator(mode="after")
    def _method_combinations(self) -> TrainConfig:
        check_method_combinations(self)
        return self

    @model_validator(mode="after")
    def _kto_batch(self) -> TrainConfig:
        if self.stage == "kto" and self.per_device_train_batch_size < 2:
            raise ValueError(
                "train.stage kto needs train.per_device_train_batch_size >= 2 (its KL term pairs the "
                "rows of a batch)"
            )
        return self

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
