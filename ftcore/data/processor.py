"""Normalized rows -> token ids and labels: one processor per data kind, chosen from a table by the
stage (STAGE_DATA). The features each kind makes are the contract with the trainers (see
docs/architecture.md): pt / sft / unsupervised: input_ids, attention_mask, labels; pairwise:
chosen_* and rejected_* of those; kto: those, kl_* of those, and kto_tags."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftcore.config.sections import DataConfig
from ftcore.data.template import RESPONSE_ROLES, Template
from ftcore.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of a token budget between a turn's prompt and its response.

    A short response is kept whole; else a short prompt is; else both shrink in proportion.
    """
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_sft_example(
    pairs: list[tuple[list[int], list[int]]],
    cutoff_len: int,
    train_on_prompt: bool,
    mask_history: bool = False,
) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, response tokens trained on) for one conversation's encoded turns.

    With mask_history (LLaMA-Factory's), only the last reply is trained on, and the budget is
    spent from the last turn backwards so that reply is the one kept."""
    input_ids: list[int] = []
    labels: list[int] = []
    kept = total = 0
    for turn, (source, target) in enumerate(pairs[::-1] if mask_history else pairs):
        if total >= cutoff_len:
            break  # later (with mask_history: earlier) turns do not fit
        source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - total)
        source, target = source[:source_len], target[:target_len]
        total += source_len + target_len
        source_labels = source if train_on_prompt else [IGNORE_INDEX] * source_len
        trained = not (mask_history and turn > 0)
        target_labels = target if trained else [IGNORE_INDEX] * target_len
        kept += target_len if trained else 0
        if mask_history:
            input_ids, labels = source + target + input_ids, source_labels + target_labels + labels
        else:
            input_ids, labels = input_ids + source + target, labels + source_labels + target_labels
    return input_ids, labels, kept


@dataclass(frozen=True)
class ProcessContext:
    """Everything a processor may need besides the rows, so new processors need no new signature."""

    tokenizer: PreTrainedTokenizerBase
    template: Template
    cutoff_len: int
    data: DataConfig = field(default_factory=DataConfig)


def _masked(prompt: list[int], response: list[int], cutoff_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt + response cut to cutoff_len (infer_seqlen), prompt masked."""
    source_len, target_len = infer_seqlen(len(prompt), len(response), cutoff_len)
    return prompt[:source_len] + response[:target_len], [IGNORE_INDEX] * source_len + response[:target_len]


def preprocess_sft(rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
    """Supervised examples: loss on responses only (unless train_on_prompt; with mask_history on the
    last reply only), truncated to cutoff_len.

    Rows with no response token left within cutoff_len are dropped (tokenize_split counts them).
    """
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in rows:
        pairs = ctx.template.encode_multiturn(
            ctx.tokenizer, row["messages"], row.get("system"), row.get("tools")
        )
        input_ids, labels, kept = encode_sft_example(
            pairs, ctx.cutoff_len, ctx.data.train_on_prompt, ctx.data.mask_history
        )
        if kept == 0:
            continue
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


def _text_eos(ctx: ProcessContext) -> str:
    """The end-of-document token for pt: the template's (Llama 3: <|end_of_text|>, not the chat
    model's end-of-turn eos), else the tokenizer's."""
    eos = ctx.template.text_eos
    if eos and ctx.tokenizer.convert_tokens_to_ids(eos) not in (None, ctx.tokenizer.unk_token_id):
        return eos
    if ctx.tokenizer.eos_token is None:
        raise ConfigError(
            "stage pt appends an end-of-text token to each document, but the tokenizer has none"
        )
    return ctx.tokenizer.eos_token


def preprocess_pt(rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
    """Pre-training blocks, as LLaMA-Factory builds them: each row's text (its first message) + eos
    (bos first when the tokenizer adds one), concatenated, cut into cutoff_len blocks; the tail
    shorter than a block is dropped. labels = input_ids (the collator masks padding)."""
    tok = ctx.tokenizer
    bos = tok.bos_token if getattr(tok, "add_bos_token", False) and tok.bos_token else ""
    eos = _text_eos(ctx)
    ids = [
        i
        for row in rows
        if row["messages"] and row["messages"][0]["content"]
        for i in tok.encode(bos + row["messages"][0]["content"] + eos, add_special_tokens=False)
    ]
    block = ctx.cutoff_len
    blocks = [ids[i : i + block] for i in range(0, len(ids) // block * block, block)]
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "labels": blocks}


def preprocess_pairwise(rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
    """Preference pairs: the prompt with the chosen and with the rejected reply, the prompt masked
    in both labels; prompt and replies cut together (infer_seqlen on the longer reply), so both
    share the same prompt ids."""
    out: dict[str, list] = {name: [] for name in PAIRWISE_COLUMNS}
    for row in rows:
        system, tools, prompt_msgs = row.get("system"), row.get("tools"), row["messages"]
        prompt, chosen = ctx.template.encode_oneturn(
            ctx.tokenizer, [*prompt_msgs, row["chosen"]], system, tools
        )
        _, rejected = ctx.template.encode_oneturn(
            ctx.tokenizer, [*prompt_msgs, row["rejected"]], system, tools
        )
        source_len, target_len = infer_seqlen(len(prompt), max(len(chosen), len(rejected)), ctx.cutoff_len)
        prompt = prompt[:source_len]
        for name, reply in (("chosen", chosen[:target_len]), ("rejected", rejected[:target_len])):
            out[f"{name}_input_ids"].append(prompt + reply)
            out[f"{name}_attention_mask"].append([1] * (source_len + len(reply)))
            out[f"{name}_labels"].append([IGNORE_INDEX] * source_len + reply)
    return out


def preprocess_kto(rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
    """KTO examples: prompt + this row's reply (prompt masked), its tag, and a KL example: this row's
    prompt with another row's reply (row i takes the reply of row n-1-i of the batch, as
    LLaMA-Factory does), each cut to cutoff_len on its own."""
    out: dict[str, list] = {name: [] for name in KTO_COLUMNS}
    replies = [row["messages"][-1] for row in rows]
    for row, kl_reply in zip(rows, replies[::-1], strict=True):
        system, tools, messages = row.get("system"), row.get("tools"), row["messages"]
        prompt, reply = ctx.template.encode_oneturn(ctx.tokenizer, messages, system, tools)
        kl_prompt, kl_response = ctx.template.encode_oneturn(
            ctx.tokenizer, [*messages[:-1], kl_reply], system, tools
        )
        input_ids, labels = _masked(prompt, reply, ctx.cutoff_len)
        kl_ids, kl_labels = _masked(kl_prompt, kl_response, ctx.cutoff_len)
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
        out["kl_input_ids"].append(kl_ids)
        out["kl_attention_mask"].append([1] * len(kl_ids))
        out["kl_labels"].append(kl_labels)
        out["kto_tags"].append(bool(row["kto_tag"]))
    return out


def preprocess_unsupervised(rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
    """Prompts for generation (ppo / grpo): input_ids run through the template's generation prompt;
    labels are the reference reply's ids when the row has one (its last turn), else empty. Prompt
    and reply are cut together with infer_seqlen."""
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in rows:
        system, tools, messages = row.get("system"), row.get("tools"), row["messages"]
        if messages[-1]["role"] in RESPONSE_ROLES:
            prompt, reply = ctx.template.encode_oneturn(ctx.tokenizer, messages, system, tools)
        else:
            prompt, reply = ctx.template.encode_prompt(ctx.tokenizer, messages, system, tools), []
        source_len, target_len = infer_seqlen(len(prompt), len(reply), ctx.cutoff_len)
        out["input_ids"].append(prompt[:source_len])
        out["attention_mask"].append([1] * source_len)
        out["labels"].append(reply[:target_len])
    return out


@dataclass(frozen=True)
class Processor:
    """A data kind's rows -> features function, and the Arrow type of each list column it makes
    (declared, so an empty split is still a dataset with columns). `whole_batch`: the output
    depends on the rows around a row (pt concatenates, kto pairs rows), so tokenize_split runs it in
    one process for ids that do not depend on the number of workers."""

    encode: Callable[[list[dict[str, Any]], ProcessContext], dict[str, list]]
    columns: dict[str, str]
    whole_batch: bool = False

    def __call__(self, rows: list[dict[str, Any]], ctx: ProcessContext) -> dict[str, list]:
        return self.encode(rows, ctx)

    def features(self) -> Any:
        from datasets import Features, List, Value

        return Features(
            {
                name: Value(dtype) if dtype == "bool" else List(Value(dtype))
                for name, dtype in self.columns.items()
            }
        )


_LM_COLUMNS = {"input_ids": "int32", "attention_mask": "int8", "labels": "int64"}
PAIRWISE_COLUMNS = {
    f"{side}_{name}": dtype for side in ("chosen", "rejected") for name, dtype in _LM_COLUMNS.items()
}
KTO_COLUMNS = {
    **_LM_COLUMNS,
    **{f"kl_{name}": dtype for name, dtype in _LM_COLUMNS.items()},
    "kto_tags": "bool",
}

# Data kind -> processor. A new kind is one entry here (and its stages in STAGE_DATA); no if/elif.
PROCESSORS: dict[str, Processor] = {
    "pt": Processor(preprocess_pt, _LM_COLUMNS, whole_batch=True),
    "sft": Processor(preprocess_sft, _LM_COLUMNS),
    "pairwise": Processor(preprocess_pairwise, PAIRWISE_COLUMNS),
    "kto": Processor(preprocess_kto, KTO_COLUMNS, whole_batch=True),
    "unsupervised": Processor(preprocess_unsupervised, _LM_COLUMNS),
}

# train.stage -> the data kind it trains on (LLaMA-Factory's stages).
STAGE_DATA: dict[str, str] = {
    "pt": "pt",
    "sft": "sft",
    "rm": "pairwise",
    "dpo": "pairwise",
    "orpo": "pairwise",
    "simpo": "pairwise",
    "kto": "kto",
    "ppo": "unsupervised",
    "grpo": "unsupervised",
}


def data_kind(stage: str) -> str:
    """The data kind of a train.stage (STAGE_DATA); an unknown stage is a config error."""
    if stage not in STAGE_DATA:
        raise ConfigError(f"train.stage={stage!r} has no data processor; known: {', '.join(STAGE_DATA)}")
    return STAGE_DATA[stage]


def tokenize_split(
    rows: Dataset,
    stage: str,
    ctx: ProcessContext,
    num_proc: int | None = None,
    work_dir: Path | None = None,
    fingerprint: str | None = None,
) -> Dataset:
    """An Arrow dataset of normalized rows -> the features of the stage's data kind, with
    `datasets.map` in batches and `num_proc` processes; the ids do not depend on num_proc. Its files
    go to `work_dir` (else datasets' cache next to `rows`); `fingerprint` spares datasets hashing the
    tokenizer."""
    process = PROCESSORS[data_kind(stage)]
    if len(rows) == 0:  # datasets.map would return a dataset without columns
        from datasets import Dataset

        return Dataset.from_dict({name: [] for name in process.columns}, features=process.features())

    def encode(batch: dict[str, list]) -> dict[str, list]:
        names = list(batch)
        return process(
            [dict(zip(names, values, strict=True)) for values in zip(*batch.values(), strict=True)], ctx
        )

    options: dict[str, Any] = {}
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        options["cache_file_name"] = str(Path(work_dir) / "tokenized.arrow")
    workers = num_proc if num_proc and num_proc > 1 and len(rows) > 1 and not process.whole_batch else None
    tokenized = rows.map(
        encode,
        batched=True,
        batch_size=1000,
        num_proc=min(workers, len(rows)) if workers else None,
        remove_columns=rows.column_names,
        features=process.features(),
        load_from_cache_file=False,
        new_fingerprint=fingerprint,
        desc=f"tokenizing {len(rows)} rows",
        **options,
    )
    dropped = len(rows) - len(tokenized)
    if dropped > 0 and not process.whole_batch:
        log.warning(
            "dropped %d of %d rows with no response tokens within cutoff_len=%d",
            dropped,
            len(rows),
            ctx.cutoff_len,
        )
    return tokenized
