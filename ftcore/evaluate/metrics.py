"""Text metrics for generated answers, computed as LLaMA-Factory's ComputeSimilarity does, so scores
compare with numbers reported from it: BLEU-4 (NLTK sentence_bleu, smoothing method3, on characters),
ROUGE-1 / 2 / L F-measure (rouge-chinese on jieba-segmented words), and exact match.

jieba segments Chinese into words and keeps English words whole, so both languages score on words;
whitespace splitting would make a whole Chinese sentence one "word". Scores are fractions in [0, 1]
(LLaMA-Factory prints them times 100).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

METRICS = ("bleu_4", "rouge_1", "rouge_2", "rouge_l", "exact_match")


def normalize(text: str) -> str:
    return " ".join(text.strip().split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


@functools.lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines are not ours to show
    jieba.initialize()
    return jieba


def segment(text: str) -> list[str]:
    """Words of `text`: jieba's segmentation, whitespace dropped."""
    return [word for word in _jieba().cut(text) if word.strip()]


def bleu_4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 on characters with smoothing method3, as LLaMA-Factory computes it."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not prediction or not reference:
        return float(prediction == reference)
    return float(
        sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    )


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of the jieba words (0 when either side is empty)."""
    from rouge_chinese import Rouge

    pred, ref = segment(prediction), segment(reference)
    if not pred or not ref:
        value = float(not pred and not ref)
        return {"rouge_1": value, "rouge_2": value, "rouge_l": value}
    scores = Rouge().get_scores(" ".join(pred), " ".join(ref))[0]
    return {f"rouge_{n}": float(scores[f"rouge-{n}"]["f"]) for n in ("1", "2", "l")}


def rouge_l(prediction: str, reference: str) -> float:
    return rouge(prediction, reference)["rouge_l"]


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    """Every metric of one answer against its reference, named as METRICS."""
    return {
        "bleu_4": bleu_4(prediction, reference),
        **rouge(prediction, reference),
        "exact_match": exact_match(prediction, reference),
    }


def per_sample(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    return [sample_scores(p, r) for p, r in zip(predictions, references, strict=True)]


def mean_scores(samples: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over the samples (nothing when there are none)."""
    if not samples:
        return {}
    return {name: sum(s[name] for s in samples) / len(samples) for name in METRICS}


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean BLEU-4, ROUGE-1/2/L and exact match over paired lists."""
    return mean_scores(per_sample(predictions, references))
