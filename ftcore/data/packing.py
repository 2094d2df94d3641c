"""Packing: several tokenized examples per training row of at most `capacity` tokens, chosen as
LLaMA-Factory does (greedy knapsack: longest first, each row filled with the longest that still fits),
so a step sees as many tokens as LLaMA-Factory's packed step.

neat: every example keeps its own positions (0, 1, ...), so with padding-free batches (FlatCollator)
no example attends to another; else positions run on through the row and attention crosses examples
(LLaMA-Factory's plain `packing`)."""

from __future__ import annotations

import bisect
from typing import Any


def knapsack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total <= capacity (an item longer than capacity gets
    a bin of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    bins: list[list[int]] = []
    while order:
        room, current = capacity, []
        while order:
            at = bisect.bisect_right(sizes, room) - 1
            if at < 0:
                break
            room -= sizes.pop(at)
            current.append(order.pop(at))
        if not current:  # longer than a whole row: alone
            sizes.pop()
            current.append(order.pop())
        bins.append(current)
    return bins


def pack_dataset(dataset: Any, capacity: int, neat: bool = True) -> Any:
    """A datasets.Dataset of packed rows (input_ids, labels, position_ids) from one of tokenized
    examples (input_ids, labels)."""
    from datasets import Dataset

    ids, labels = dataset["input_ids"], dataset["labels"]
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for group in knapsack([len(x) for x in ids], capacity):
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_pos: list[int] = []
        for i in sorted(group):
            row_ids += list(ids[i])
            row_labels += list(labels[i])
            row_pos += list(range(len(ids[i]))) if neat else []
        rows["input_ids"].append(row_ids)
        rows["labels"].append(row_labels)
        rows["position_ids"].append(row_pos if neat else list(range(len(row_ids))))
    return Dataset.from_dict(rows)
