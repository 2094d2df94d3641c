"""Data layer: dataset_info.json loading, chat templates, per-kind processors, collators, splits."""

from ftcore.data.collator import SFTCollator
from ftcore.data.loader import dataset_entry, dataset_files, load_dataset_info, load_rows
from ftcore.data.processor import (
    IGNORE_INDEX,
    PROCESSORS,
    STAGE_DATA,
    ProcessContext,
    data_kind,
    infer_seqlen,
    preprocess_sft,
)
from ftcore.data.splits import build_splits, split_fingerprints
from ftcore.data.template import Template, get_template, infer_template, list_templates

__all__ = [
    "IGNORE_INDEX",
    "PROCESSORS",
    "STAGE_DATA",
    "ProcessContext",
    "SFTCollator",
    "Template",
    "build_splits",
    "data_kind",
    "dataset_entry",
    "dataset_files",
    "get_template",
    "infer_seqlen",
    "infer_template",
    "list_templates",
    "load_dataset_info",
    "load_rows",
    "preprocess_sft",
    "split_fingerprints",
]
