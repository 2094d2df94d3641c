"""Variable-length attention for padding-free batches: the examples of a batch travel as one row with
position_ids that restart at each example (and cu_seq_lens, the example boundaries), and each example
attends only to itself, at the cost of its own length (no dense block mask over the packed row).

Registered with transformers' AttentionInterface as "ftflow_varlen": per example, torch's SDPA
(flash / memory-efficient kernels on GPU, the fused CPU kernel here). Anything that is not a packed
row (a padded batch, generation with a cache) goes to transformers' own SDPA unchanged.
"""

from __future__ import annotations

import itertools
from typing import Any

NAME = "ftflow_varlen"
_registered = False


def cu_seqlens_from_positions(position_ids: Any) -> Any:
    """Example boundaries [0, s1, ..., total] of a one-row batch whose positions restart at 0."""
    import torch

    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    total = torch.tensor([flat.numel()], device=flat.device)
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=starts.dtype, device=flat.device), starts])
    return torch.cat([starts, total]).to(torch.int32)


def varlen_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention per example of a packed row (query [1, heads, total, dim]); else transformers'
    SDPA with the mask it was given."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    packed_shape = query.shape[0] == 1 and query.shape[2] == key.shape[2] and attention_mask is None
    if bounds is None and packed_shape and kwargs.get("position_ids") is not None:
        bounds = cu_seqlens_from_positions(kwargs["position_ids"])
    if bounds is None or not packed_shape or len(bounds) <= 2:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]
    drop = dropout if module.training else 0.0
    edges = bounds.tolist()
    with _per_example_backends(query):
        parts = _per_example(query, key, value, edges, drop, scaling, gqa)
    out = torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _per_example_backends(query: Any) -> Any:
    """On a GPU, SDPA's flash / memory-efficient kernels only: the cuDNN backend builds a plan per new
    sequence length, and every example has its own (measured on an H200: 7 ms per call, 4x slower
    training than padding). On a CPU, torch's choice."""
    import contextlib

    if not query.is_cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _per_example(query: Any, key: Any, value: Any, edges: list[int], drop: float, scaling: Any, gqa: bool):
    import torch.nn.functional as F

    return [
        F.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            is_causal=True,
            dropout_p=drop,
            scale=scaling,
            enable_gqa=gqa,
        )
        for s, e in itertools.pairwise(edges)
        if e > s
    ]


def _mask(*args: Any, **kwargs: Any) -> Any:
    """The mask transformers builds for this kernel: none for an unpadded (packed) row, whose example
    boundaries come from position_ids; SDPA's mask for a padded batch."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make "ftflow_varlen" a known attn_implementation (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, varlen_attention)
        AttentionMaskInterface.register(NAME, _mask)
        _registered = True
    return NAME
