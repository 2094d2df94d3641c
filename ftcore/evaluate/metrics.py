"""Text metrics for generated answers: exact match and ROUGE-L (LCS F-measure).

ROUGE-L is computed on whitespace words, or on characters for text without spaces (CJK), so no NLTK
or rouge-score dependency is needed and results are reproducible.
"""

from __future__ import annotations


def normalize(text: str) -> str:
    return " ".join(text.strip().split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def _units(text: str) -> list[str]:
    text = normalize(text)
    return text.split(" ") if " " in text else list(text)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """F1 of the longest common subsequence between prediction and reference units."""
    pred, ref = _units(prediction), _units(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match and ROUGE-L over paired lists."""
    if not predictions:
        return {}
    n = len(predictions)
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "rouge_l": sum(map(rouge_l, predictions, references)) / n,
    }
