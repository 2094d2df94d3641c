"""Tiny random-weight models with locally trained tokenizers, for tests and the offline quickstart.

Each built-in mirrors one architecture family: its config class, its special tokens, its
pre-tokenizer regex and its official chat template, only far smaller. Weights come from a fixed
seed and the tokenizer from a fixed corpus, so a build is reproducible; it is built once into the
ftflow cache (FTFLOW_HOME, default ~/.cache/ftflow) and reused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.artifacts import atomic_dir
from ftcore.errors import ModelNotAvailableError

log = logging.getLogger(__name__)

BUILTIN_VERSION = 3
BUILTIN_MARKER = "ftflow_builtin.json"

# The pre-tokenizer regexes of the real families: segment-wise encoding of templates only equals
# whole-text encoding when newlines split the same way.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Mistral Nemo's "tekken" tokenizer (tiktoken-style byte-level BPE): cased words split, digits one by one.
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ASSETS = Path(__file__).parent / "builtin_assets"  # official Jinja files, sources in its README.md


def _official(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


# Official chat templates (Qwen2-Instruct, Meta-Llama-3-Instruct), verbatim (templates qwen2, llama3).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BuiltinSpec:
    """One tiny model: its family's config class and tokenizer conventions."""

    model_type: str
    template: str
    split_regex: str
    chat_template: str | None  # None: ftflow's own Jinja of `template` (ftcore.data.chat_jinja)
    special_tokens: list[str]
    bos: str | None
    eos: str
    pad: str
    stop_tokens: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    added_tokens: list[str] = field(default_factory=list)  # ordinary added tokens (Qwen3's <think>)


_COMMON = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    # Wider than the usual 0.02: the output head is frozen under LoRA and tied to the embeddings, and
    # with 0.02 its logits cannot spread far enough for a fine-tune to show on the tiny model.
    "initializer_range": 0.1,
}

BUILTINS: dict[str, BuiltinSpec] = {
    "tiny-qwen2": BuiltinSpec(
        model_type="qwen2",
        template="qwen2",
        split_regex=QWEN2_SPLIT,
        chat_template=QWEN2_CHAT_TEMPLATE,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        stop_tokens=["<|im_end|>", "<|endoftext|>"],
        config={**_COMMON, "tie_word_embeddings": True, "rope_theta": 1000000.0},
    ),
    "tiny-qwen3": BuiltinSpec(
        model_type="qwen3",
        template="qwen3",
        split_regex=QWEN2_SPLIT,
        chat_template=None,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        added_tokens=["<think>", "</think>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        stop_tokens=["<|im_end|>", "<|endoftext|>"],
        config={**_COMMON, "head_dim": 32, "tie_word_embeddings": True, "rope_theta": 1000000.0},
    ),
    "tiny-llama": BuiltinSpec(
        model_type="llama",
        template="llama3",
        split_regex=LLAMA3_SPLIT,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        special_tokens=[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|finetune_right_pad_id|>",
        ],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        stop_tokens=["<|eot_id|>", "<|end_of_text|>"],
        config={**_COMMON, "tie_word_embeddings": False, "rope_theta": 500000.0},
    ),
    # Mistral-Nemo-Instruct-2407: tekken tokenizer, [INST] control tokens, no system turn of its own.
    "tiny-mistral": BuiltinSpec(
        model_type="mistral",
        template="ministral",
        split_regex=TEKKEN_SPLIT,
        chat_template=_official("mistral-nemo-instruct-2407.jinja"),
        special_tokens=[
            "<unk>",
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
            "[TOOL_CALLS]",
            "<pad>",
            "[PREFIX]",
            "[MIDDLE]",
            "[SUFFIX]",
        ],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        stop_tokens=["</s>"],
        config={**_COMMON, "head_dim": 32, "tie_word_embeddings": False, "rope_theta": 1000000.0},
    ),
    # gemma-2-it. Gemma's SentencePiece (no dummy prefix, digits split) stands in as byte-level BPE
    # with the same splits; its turns, bos and the tied, softcapped model are the real ones.
    "tiny-gemma2": BuiltinSpec(
        model_type="gemma2",
        template="gemma2",
        split_regex=QWEN2_SPLIT,
        chat_template=_official("gemma-2-it.jinja"),
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        stop_tokens=["<end_of_turn>", "<eos>"],
        config={
            **_COMMON,
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "sliding_window": 256,
            "tie_word_embeddings": True,
        },
    ),
    # Phi-4 (model_type phi3, fused qkv / gate_up projections): cl100k-style tokenizer, <|im_sep|>.
    "tiny-phi3": BuiltinSpec(
        model_type="phi3",
        template="phi4",
        split_regex=LLAMA3_SPLIT,
        chat_template=_official("phi-4.jinja"),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|dummy_85|>"],
        bos="<|endoftext|>",
        eos="<|im_end|>",
        pad="<|dummy_85|>",
        stop_tokens=["<|im_end|>", "<|endoftext|>"],
        config={**_COMMON, "tie_word_embeddings": False, "rope_theta": 250000.0},
    ),
    # Qwen1.5-MoE-A2.7B-Chat: routed experts plus a gated shared expert, the Qwen1.5 / Qwen2 template.
    "tiny-qwen2-moe": BuiltinSpec(
        model_type="qwen2_moe",
        template="qwen2",
        split_regex=QWEN2_SPLIT,
        chat_template=QWEN2_CHAT_TEMPLATE,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        stop_tokens=["<|im_end|>", "<|endoftext|>"],
        config={
            **_COMMON,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 64,
            "shared_expert_intermediate_size": 128,
            "tie_word_embeddings": False,
            "rope_theta": 1000000.0,
        },
    ),
}

VOCAB_SIZE = 2048


def ftflow_home() -> Path:
    """Root of ftflow's own cache (built-in models, tokenized datasets shared across jobs)."""
    return Path(os.environ.get("FTFLOW_HOME", Path.home() / ".cache" / "ftflow")).expanduser()


def builtin_dir(name: str) -> Path:
    return ftflow_home() / "builtin" / f"{name}-v{BUILTIN_VERSION}"


def ensure_builtin(name: str) -> Path:
    """Path of the built-in model `name`, building it on first use."""
    if name not in BUILTINS:
        raise ModelNotAvailableError(
            f"unknown built-in model 'builtin:{name}'; available: {', '.join(sorted(BUILTINS))}"
        )
    target = builtin_dir(name)
    problem = builtin_problem(target)
    if problem is None:
        return target
    if (target / BUILTIN_MARKER).exists():
        log.warning("built-in model %s in %s %s; building it again", name, target, problem)
    else:
        log.info("building built-in model %s into %s", name, target)
    with atomic_dir(target) as tmp:
        _build(name, BUILTINS[name], tmp)
    return target


def builtin_problem(target: Path) -> str | None:
    """What is wrong with a built copy (None when whole): every file recorded in its marker must be
    there with its recorded size, so a truncated or half-deleted cache is rebuilt, not loaded."""
    try:
        files = json.loads((target / BUILTIN_MARKER).read_text())["files"]
        sizes = {str(name): int(size) for name, size in files.items()}
    except FileNotFoundError:
        return "is not built"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "has a marker without a file list (corrupt or from an older ftflow)"
    for name, size in sorted(sizes.items()):
        path = target / name
        if not path.is_file():
            return f"lacks {name}"
        if path.stat().st_size != size:
            return f"has a damaged {name} ({path.stat().st_size} bytes, built with {size})"
    return None


def _corpus() -> list[str]:
    """A fixed English-ish corpus covering letters, digits, punctuation and chat markup."""
    words = (
        "the of and to in is you that it he was for on are as with his they at be this have from or "
        "one had by word but not what all were we when your can said there use an each which she do "
        "how their if will up other about out many then them these so some her would make like him "
        "into time has look two more write go see number no way could people my than first water been "
        "call who oil its now find long down day did get come made may part assistant user system "
        "helpful answer question reverse uppercase lowercase sort count add sum letters words "
        "sentence convert capital country city name hello world model fine tuned ftflow please give "
        "result input output instruction response"
    ).split()
    lines = []
    for i in range(400):
        picked = [words[(i * 7 + j * 13) % len(words)] for j in range(8 + i % 5)]
        lines.append(" ".join(picked).capitalize() + ". " + str(i * 37 % 1000) + " + " + str(i % 97) + " = ?")
        lines.append(" ".join(w.upper() for w in picked[:4]) + ", " + "".join(reversed(picked[0])) + "!\n")
    return lines


def _train_tokenizer(spec: BuiltinSpec):  # -> PreTrainedTokenizerFast
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(spec.special_tokens) - len(spec.added_tokens),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_special_tokens(spec.special_tokens)
    tokenizer.add_tokens(spec.added_tokens)
    kwargs = {"eos_token": spec.eos, "pad_token": spec.pad}
    if spec.bos:
        kwargs["bos_token"] = spec.bos
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **kwargs
    )
    if spec.chat_template is None:
        from ftcore.data.template import get_template

        wrapped.chat_template = get_template(spec.template).chat_template()
    else:
        wrapped.chat_template = spec.chat_template
    wrapped.model_max_length = spec.config["max_position_embeddings"]
    return wrapped


def _build(name: str, spec: BuiltinSpec, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    tokenizer = _train_tokenizer(spec)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in spec.special_tokens}
    config = AutoConfig.for_model(
        spec.model_type,
        vocab_size=len(tokenizer),
        bos_token_id=ids.get(spec.bos) if spec.bos else None,
        eos_token_id=ids[spec.eos],
        pad_token_id=ids[spec.pad],
        **spec.config,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids[tok] for tok in spec.stop_tokens],
        pad_token_id=ids[spec.pad],
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    (out / BUILTIN_MARKER).write_text(
        json.dumps(
            {"name": name, "version": BUILTIN_VERSION, "template": spec.template, "files": files}, indent=2
        )
    )
