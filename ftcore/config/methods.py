"""Config sub-sections of the training methods (freeze, qlora, galore, apollo, badam) and of the speed
and memory switches, with the check that refuses wrong combinations at config time.

Field names follow LLaMA-Factory's flat keys without their prefix (freeze_trainable_layers ->
train.freeze.trainable_layers); ftcore.config.llamafactory maps the flat names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ftcore.config.base import NameList, Section

if TYPE_CHECKING:
    from ftcore.config.sections import TrainConfig


class FreezeConfig(Section):
    trainable_layers: int = Field(
        2,
        description="finetuning_type=freeze: how many hidden layers train; +N the last N (top), -N the "
        "first N (bottom). Must not be 0.",
    )
    trainable_modules: NameList = Field(
        default_factory=lambda: ["all"],
        description="Module names inside those layers that train (self_attn, mlp, ...); 'all': the whole "
        "layers.",
    )
    extra_modules: NameList = Field(
        default_factory=list,
        description="Modules outside the hidden layers that train too (embed_tokens, norm, lm_head).",
    )


class QuantizationConfig(Section):
    bit: Literal[4, 8] | None = Field(
        None,
        description="QLoRA: load the frozen base in 4 or 8 bits with bitsandbytes (works on CPU). The "
        "adapter merges into the full-precision base.",
    )
    method: Literal["bnb"] = Field(
        "bnb", description="On-the-fly quantizer (LLaMA-Factory's quantization_method); bitsandbytes only."
    )
    type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (bitsandbytes).")
    double_quantization: bool = Field(
        True, description="4-bit: quantize the quantization constants too (saves ~0.4 bit per weight)."
    )


class GaloreConfig(Section):
    enabled: bool = Field(False, description="GaLore: full tuning with low-rank projected gradients.")
    target: NameList = Field(
        default_factory=lambda: ["all"], description="Linear module names to project; 'all': every one."
    )
    rank: int = Field(16, gt=0, description="Rank of the projected gradients.")
    update_interval: int = Field(200, gt=0, description="Steps between projection updates.")
    scale: float = Field(2.0, gt=0, description="GaLore scaling coefficient.")
    proj_type: Literal["std", "reverse_std", "right", "left", "full"] = Field(
        "std", description="Projection type."
    )
    layerwise: bool = Field(
        False,
        description="Update layer by layer during backward (less memory). Single process only and no "
        "gradient accumulation (transformers' layer-wise optimizers).",
    )


class ApolloConfig(Section):
    enabled: bool = Field(
        False, description="APOLLO: full tuning with SGD-like optimizer memory and AdamW-level results."
    )
    target: NameList = Field(
        default_factory=lambda: ["all"], description="Linear module names it applies to; 'all': every one."
    )
    rank: int = Field(16, gt=0, description="Rank of the auxiliary low-rank space.")
    update_interval: int = Field(200, gt=0, description="Steps between projection updates.")
    scale: float = Field(32.0, gt=0, description="APOLLO scaling coefficient.")
    proj: Literal["svd", "random"] = Field("random", description="Low-rank projection algorithm.")
    proj_type: Literal["std", "right", "left"] = Field("std", description="Projection type.")
    scale_type: Literal["channel", "tensor"] = Field("channel", description="Gradient scaling granularity.")
    layerwise: bool = Field(
        False, description="Update layer by layer during backward. Single process, no gradient accumulation."
    )
    scale_front: bool = Field(False, description="Norm-growth limiter in front of the gradient scaling.")


class BadamConfig(Section):
    enabled: bool = Field(False, description="BAdam: full tuning that updates one block of layers at a time.")
    mode: Literal["layer", "ratio"] = Field(
        "layer", description="layer: one decoder layer at a time; ratio: a fraction of every weight."
    )
    start_block: int | None = Field(None, ge=0, description="layer mode: the first block to train.")
    switch_mode: Literal["ascending", "descending", "random", "fixed"] = Field(
        "ascending", description="layer mode: order in which blocks take turns."
    )
    switch_interval: int = Field(
        50, description="Steps before the next block trains (-1: never switch; ratio mode: mask update)."
    )
    update_ratio: float = Field(0.05, gt=0, le=1, description="ratio mode: fraction of each weight updated.")
    mask_mode: Literal["adjacent", "scatter"] = Field(
        "adjacent", description="ratio mode: trainable entries adjacent or scattered."
    )
    verbose: int = Field(0, ge=0, le=2, description="0: quiet; 1: print the block; 2: its parameters too.")


class SpeedConfig(Section):
    gradient_checkpointing: bool | Literal["auto"] | None = Field(
        None,
        description="Recompute activations in backward (less memory, ~30% slower). auto (or unset): on "
        "only when the estimated activations of a batch exceed half the free memory (sft / pt; other "
        "stages: on with a GPU, off on CPU). LLaMA-Factory's disable_gradient_checkpointing turns it off.",
    )
    packing: bool | None = Field(
        None,
        description="Several examples per training row of data.cutoff_len tokens (LLaMA-Factory's "
        "greedy knapsack). Unset: on for pt (its cutoff_len blocks), off for sft. Plain packing lets "
        "examples of a row attend to each other, as LLaMA-Factory's; see neat_packing.",
    )
    neat_packing: bool = Field(
        False,
        description="Packing without attention across examples (implies packing): each example keeps "
        "its positions and attends only to itself, at the cost of its own length (variable-length "
        "attention). A step then sees about batch x cutoff_len tokens, as LLaMA-Factory's.",
    )
    packing_len: int | None = Field(None, gt=8, description="Tokens per packed row; unset: data.cutoff_len.")
    padding_free: bool = Field(
        True,
        description="sft / pt: lay the examples of a batch end to end in one row, with no padding and "
        "variable-length attention (no example sees another). The loss is the same as with padding. "
        "Off: right padding to a multiple of 8.",
    )
    group_by_length: bool = Field(
        False,
        description="padding_free off: batch examples of similar length together (less padding; "
        "the order of examples is no longer random).",
    )
    fused_loss: bool = Field(
        True,
        description="sft / pt: compute the LM head and cross-entropy only at label positions, in chunks, "
        "never materializing the batch's full-vocabulary logits (Liger's kernel on a GPU with "
        "liger-kernel installed, ftflow's chunked one otherwise). Same loss and gradients.",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile the model (TrainingArguments.torch_compile). Off by default: on CPU "
        "the compile time exceeded the gain in short runs (see bench/RESULTS.md).",
    )
    flash_attn: Literal["auto", "sdpa", "eager", "fa2"] = Field(
        "auto",
        description="Attention kernel: auto (transformers picks, sdpa where supported), sdpa, eager, or "
        "fa2 (FlashAttention-2: needs a CUDA GPU and the flash-attn package).",
    )
    enable_liger_kernel: bool = Field(
        False, description="Liger's fused Triton kernels (needs a CUDA GPU and the liger-kernel package)."
    )
    use_unsloth: bool = Field(False, description="Unsloth's patched model (needs a CUDA GPU and unsloth).")
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on the input embeddings while training (5 is typical)."
    )
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = Field(
        None, description="Stretch RoPE to a longer context; the factor is rope_factor."
    )
    rope_factor: float = Field(2.0, gt=1, description="Context stretch factor of rope_scaling.")


def check_method_combinations(train: TrainConfig) -> None:
    """Refuse combinations that cannot work, naming both keys (raised as ValueError: pydantic reports
    it as a config error on the train section)."""
    ft, lora, quant = train.finetuning_type, train.lora, train.quantization
    optimizers = [n for n in ("galore", "apollo", "badam") if getattr(train, n).enabled]

    def refuse(first: str, second: str, why: str) -> None:
        raise ValueError(f"{first} cannot be used with {second}: {why}")

    if len(optimizers) > 1:
        refuse(f"train.{optimizers[0]}.enabled", f"train.{optimizers[1]}.enabled", "pick one optimizer")
    if optimizers and ft != "full":
        refuse(
            f"train.{optimizers[0]}.enabled",
            f"train.finetuning_type={ft}",
            "GaLore, APOLLO and BAdam replace the optimizer of full tuning; set finetuning_type: full",
        )
    if quant.bit is not None and ft != "lora":
        refuse("train.quantization.bit", f"train.finetuning_type={ft}", "a quantized base trains only LoRA")
    if lora.pissa_init and quant.bit is not None:
        refuse("train.lora.pissa_init", "train.quantization.bit", "PiSSA factors full-precision weights")
    if lora.pissa_init and lora.train_adapter:
        refuse("train.lora.pissa_init", "train.lora.train_adapter", "the adapter already exists")
    if lora.pissa_init and train.stage in ("ppo", "kto", "dpo"):
        refuse("train.lora.pissa_init", f"train.stage={train.stage}", "its reference model is the base")
    if lora.use_dora and quant.bit == 8:  # seen: bitsandbytes 0.50 int8 + peft DoRA fails in forward
        refuse(
            "train.lora.use_dora", "train.quantization.bit=8", "peft's DoRA cannot use 8-bit weights; use 4"
        )
    if train.speed.use_unsloth and quant.bit == 8:
        refuse("train.speed.use_unsloth", "train.quantization.bit=8", "unsloth quantizes in 4 bits only")
    for name in ("galore", "apollo"):
        section = getattr(train, name)
        if section.enabled and section.layerwise and train.gradient_accumulation_steps > 1:
            refuse(
                f"train.{name}.layerwise",
                "train.gradient_accumulation_steps>1",
                "the layer-wise optimizer steps inside backward",
            )
    if train.speed.rope_scaling and ft == "lora":
        refuse(
            "train.speed.rope_scaling",
            "train.finetuning_type=lora",
            "an adapter does not carry the stretched RoPE into evaluate / merge yet; use freeze or full",
        )
    if train.badam.enabled and train.badam.mode == "ratio":
        raise ValueError(
            "train.badam.mode=ratio: BAdam's ratio mode makes sparse gradients, whose norm transformers 5's "
            "Trainer computes every step and torch cannot (seen with transformers 5.24); use mode: layer"
        )
    if ft == "freeze" and train.freeze.trainable_layers == 0:
        raise ValueError("train.freeze.trainable_layers: 0 trains nothing; use +N (top) or -N (bottom)")
