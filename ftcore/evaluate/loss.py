"""Held-out loss and perplexity: the same masked token loss training optimizes, averaged per token.

The full-vocabulary logits of a batch (batch x length x vocab, 4.6 GiB in fp32 for 8 x 1024 tokens of a
152k vocabulary) are never built: the decoder yields hidden states, and only positions with a label
are projected onto the vocabulary, a chunk of tokens at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ftcore.evaluate")

# fp32 logits of one chunk stay under this size (4 bytes per vocabulary entry per token)
CHUNK_BYTES = 256 * 1024 * 1024
# positions compared once per model between the chunked path and the model's own forward
_CHECK_POSITIONS = 8


def eval_loss(
    model: Any,
    dataset: Any,
    pad_token_id: int,
    batch_size: int = 8,
    chunk_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss over `dataset` (input_ids / labels) and its perplexity.

    `chunk_tokens`: labelled tokens projected onto the vocabulary at once (default: CHUNK_BYTES worth).
    `progress(done, total)` is called after each batch.
    """
    import torch

    from ftcore.data.collator import SFTCollator

    collate = SFTCollator(pad_token_id=pad_token_id)
    device = next(model.parameters()).device
    model.eval()
    head = ChunkedHead.of(model, chunk_tokens)
    total_loss, total_tokens = 0.0, 0
    n_batches = -(-len(dataset) // batch_size)
    with torch.no_grad():
        if head is not None and len(dataset) and not head.agrees_with(model, dataset[0]["input_ids"]):
            log.warning(
                "[evaluate] %s computes its logits in a way the chunked loss does not know; "
                "using full logits",
                type(head.lm).__name__,
            )
            head = None
        for index, start in enumerate(range(0, len(dataset), batch_size)):
            rows = [as_supervised(dataset[i]) for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(device) for k, v in collate(rows).items()}
            labels = batch["labels"][:, 1:]
            if head is not None:
                total_loss += head.loss_sum(batch["input_ids"], batch["attention_mask"], labels)
            else:
                total_loss += _full_loss_sum(model, batch["input_ids"], batch["attention_mask"], labels)
            total_tokens += int((labels != -100).sum())
            if progress is not None:
                progress(index + 1, n_batches)
    if total_tokens == 0:
        return {}
    loss = total_loss / total_tokens
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "eval_tokens": float(total_tokens)}


def as_supervised(row: dict[str, Any]) -> dict[str, Any]:
    """An "unsupervised" row (grpo / ppo: the prompt as input_ids, the reference reply as labels) as a
    supervised one, prompt + reply with the prompt masked, so its loss is the sft-style reply loss.
    Rows whose labels already align with input_ids pass unchanged."""
    prompt, reply = list(row["input_ids"]), list(row.get("labels") or [])
    if len(reply) == len(prompt) and all(lab in (-100, tok) for lab, tok in zip(reply, prompt, strict=True)):
        return row
    return {
        "input_ids": prompt + reply,
        "attention_mask": [1] * (len(prompt) + len(reply)),
        "labels": [-100] * len(prompt) + reply,
    }


def _full_loss_sum(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> float:
    """The plain way, for models whose logits ChunkedHead cannot reproduce."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    shift = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        shift.reshape(-1, shift.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
    ).item()


class ChunkedHead:
    """A causal LM split into decoder (-> hidden states) and head (-> logits of some positions)."""

    def __init__(self, lm: Any, decoder: Any, head: Any, chunk_tokens: int) -> None:
        self.lm, self.decoder, self.head, self.chunk_tokens = lm, decoder, head, chunk_tokens
        text = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        # what transformers' *ForCausalLM.forward does to lm_head's output (Cohere, Granite, Gemma 2/3)
        self.scale = getattr(text, "logit_scale", None)
        self.divisor = getattr(text, "logits_scaling", None)
        self.softcap = getattr(text, "final_logit_softcapping", None)

    @classmethod
    def of(cls, model: Any, chunk_tokens: int | None = None) -> ChunkedHead | None:
        """The split of a transformers causal LM, plain or wrapped by peft; None when it has none."""
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: LoRA stays on
        if not (hasattr(lm, "get_decoder") and hasattr(lm, "get_output_embeddings")):
            return None
        decoder, head = lm.get_decoder(), lm.get_output_embeddings()
        if decoder is None or decoder is lm or head is None:
            return None
        if chunk_tokens is None:
            vocab = getattr(head, "out_features", None) or head.weight.shape[0]
            chunk_tokens = max(1, CHUNK_BYTES // (4 * vocab))
        return cls(lm, decoder, head, chunk_tokens)

    def logits(self, hidden: Any) -> Any:
        """fp32 logits of hidden states [n, hidden], as the model's own forward would compute them."""
        import torch

        logits = self.head(hidden).float()
        if self.scale is not None:
            logits = logits * self.scale
        if self.divisor is not None:
            logits = logits / self.divisor
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def hidden(self, input_ids: Any, attention_mask: Any) -> Any:
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out[0]

    def loss_sum(self, input_ids: Any, attention_mask: Any, labels: Any) -> float:
        """Summed cross-entropy of the labelled next tokens; labels are already shifted by one."""
        import torch

        keep = labels != -100
        hidden = self.hidden(input_ids, attention_mask)[:, :-1][keep]
        targets = labels[keep]
        total = 0.0
        for start in range(0, targets.numel(), self.chunk_tokens):
            logits = self.logits(hidden[start : start + self.chunk_tokens])
            chunk = targets[start : start + self.chunk_tokens]
            total += torch.nn.functional.cross_entropy(logits, chunk, reduction="sum").item()
        return total

    def agrees_with(self, model: Any, input_ids: list[int]) -> bool:
        """Whether this split reproduces the model's own logits (checked once, on a few positions)."""
        import torch

        device = next(model.parameters()).device
        ids = torch.tensor([list(input_ids)], device=device)
        keep = min(_CHECK_POSITIONS, ids.shape[1])
        try:
            expected = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0, -keep:].float()
        except TypeError:  # remote code without logits_to_keep: stay with what the model does itself
            return False
        got = self.logits(self.hidden(ids, torch.ones_like(ids))[0, -keep:])
        relative = 1e-3 if self.head.weight.dtype == torch.float32 else 2e-2
        tolerance = relative * (1 + expected.abs().max())
        return bool((got - expected).abs().max() <= tolerance)
