"""The LM head and the cross-entropy only where labels are, in chunks: the batch's full-vocabulary fp32
logits never exist (at cutoff 512, batch 8 and a 150k vocabulary they alone would be ~2.5 GB).

Each chunk's logits give the loss and, at once, the gradients of the hidden states (and of the head
weight when it trains), so backward keeps no logits either (Liger's fused linear cross-entropy, in
plain torch). On a GPU with liger-kernel installed, Liger's Triton kernel does the same.
"""

from __future__ import annotations

from typing import Any

from ftcore.data.processor import IGNORE_INDEX

CHUNK = 1024  # label positions per chunk: chunk x vocab fp32 logits at a time


def _chunked_ce_function() -> Any:
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """sum over rows of CE(hidden @ weight.T + bias, target), times `scale`."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, target: Any, scale: float) -> Any:
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            w = weight.to(hidden.dtype)
            for start in range(0, hidden.shape[0], CHUNK):
                h = hidden[start : start + CHUNK]
                t = target[start : start + CHUNK]
                logits = (h @ w.T).float()
                if bias is not None:
                    logits += bias.float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if need_h or need_w or need_b:
                    d = torch.exp_(logits.sub_(lse[:, None]))  # softmax, in place
                    d[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                    d.mul_(scale)
                    if need_b:
                        grad_b += d.sum(0)
                    d = d.to(hidden.dtype)
                    if need_h:
                        grad_h[start : start + CHUNK] = d @ w
                    if need_w:
                        grad_w += (d.T @ h).float()
            ctx.grads = (grad_h, grad_w, grad_b)
            ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            return total * scale

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            grads = [
                None if g is None else (g * grad_out).to(dtype)
                for g, dtype in zip(ctx.grads, ctx.dtypes, strict=True)
            ]
            ctx.grads = None
            return grads[0], grads[1], grads[2], None, None

    return ChunkedLinearCrossEntropy


_FUNCTION: Any = None


def linear_cross_entropy(hidden: Any, weight: Any, bias: Any, target: Any, denominator: float) -> Any:
    """sum_i CE(hidden_i @ weight.T + bias, target_i) / denominator, chunked (Liger's on a CUDA tensor
    when liger-kernel is installed)."""
    global _FUNCTION
    if hidden.is_cuda:
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            pass
        else:
            return (
                LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, hidden, target, bias) / denominator
            )
    if _FUNCTION is None:
        _FUNCTION = _chunked_ce_function()
    return _FUNCTION.apply(hidden, weight, bias, target, 1.0 / denominator)


def plain_causal_lm(model: Any) -> Any | None:
    """The transformers causal LM inside `model` (a peft model or itself) when its logits are exactly
    lm_head(last hidden state) with a plain Linear head; else None (softcapped or scaled logits, an
    adapted or quantized head: those keep the model's own loss)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    config = getattr(base, "config", None)
    if type(head) is not torch.nn.Linear or config is None or not hasattr(base, "get_decoder"):
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    if not type(base).__name__.endswith("ForCausalLM"):
        return None
    return base


def causal_lm_loss(base: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """The next-token loss of `base` on `inputs` (with labels) through the chunked head: the mean over
    label positions, or their sum / num_items_in_batch (gradient accumulation) as transformers does."""
    labels = inputs["labels"]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = base.get_decoder()(**rest, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    selected = hidden[:, :-1][keep]
    count = keep.sum()
    denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
    head = base.get_output_embeddings()
    return linear_cross_entropy(selected, head.weight, head.bias, target[keep], float(denominator))


def with_fused_loss(trainer_class: Any) -> Any:
    """`trainer_class` whose training loss goes through the chunked head (causal_lm_loss) when the model
    allows it (plain_causal_lm) and it runs in one process; everything else is the class's own."""

    class FusedLossTrainer(trainer_class):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            unwrapped = self.accelerator.unwrap_model(model)
            base = plain_causal_lm(unwrapped) if unwrapped is model else None
            if (
                return_outputs
                or base is None
                or "labels" not in inputs
                or self.accelerator.num_processes > 1
                or self.label_smoother is not None
                or self.compute_loss_func is not None
            ):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.model_accepts_loss_kwargs:
                num_items_in_batch = None  # the Trainer then divides by the accumulation steps itself
            return causal_lm_loss(base, inputs, num_items_in_batch)

    FusedLossTrainer.__name__ = FusedLossTrainer.__qualname__ = f"FusedLoss{trainer_class.__name__}"
    return FusedLossTrainer
