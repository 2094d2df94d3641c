"""Generation metrics as LLaMA-Factory computes them, with values worked out by hand, and the
comparison table of base / champion / candidate."""

from __future__ import annotations

import pytest

from ftcore.evaluate.compare import Column, comparison_table, lower_is_better
from ftcore.evaluate.metrics import METRICS, bleu_4, rouge, score, segment

APPROX = {"abs": 1e-6}  # rouge-chinese adds 1e-8 to its F denominators


def test_english_rouge_on_words() -> None:
    # 6 words each. ROUGE-N counts distinct n-grams (the `rouge` package rouge-chinese forks):
    # unigrams {the, cat, sat|is, on, mat}: 4 of 5 shared -> 0.8; bigrams: the-cat, on-the, the-mat
    # of 5 -> 0.6; LCS "the cat on the mat" = 5 of 6 both ways -> 5/6.
    scores = rouge("the cat sat on the mat", "the cat is on the mat")
    assert scores == pytest.approx({"rouge_1": 0.8, "rouge_2": 0.6, "rouge_l": 5 / 6}, **APPROX)


def test_chinese_is_segmented_into_words() -> None:
    assert segment("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    # [我 爱 北京 天安门] vs [我 爱 北京]: unigrams 3/4 precision, 3/3 recall -> F 6/7; bigrams 2 of 3 vs 2
    # of 2 -> F 0.8; LCS 3 -> 6/7.
    scores = rouge("我爱北京天安门", "我爱北京")
    assert scores == pytest.approx({"rouge_1": 6 / 7, "rouge_2": 0.8, "rouge_l": 6 / 7}, **APPROX)


def test_rouge_l_of_mixed_chinese_fails_on_whitespace_words() -> None:
    """The old ROUGE-L split on spaces, which makes '今天天气很好' one word: LCS 1 of 2 -> 0.5. On jieba's
    words [今天天气 很 好 ok] vs [今天天气 不错 ok] the LCS is 2: precision 2/4, recall 2/3 -> F 4/7."""
    assert rouge("今天天气很好 ok", "今天天气不错 ok")["rouge_l"] == pytest.approx(4 / 7, **APPROX)


def test_bleu_4_on_characters_with_smoothing_method3() -> None:
    # a b c d vs a b c e: precisions 3/4, 2/3, 1/2 and 0/1, which method3 smooths to 1/(2*1); no
    # brevity penalty: (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 0.125 ** 0.25
    assert bleu_4("abcd", "abce") == pytest.approx(0.125**0.25)
    # 7 characters vs 4: precisions 4/7, 3/6, 2/5, 1/4, longer than the reference -> no penalty
    assert bleu_4("我爱北京天安门", "我爱北京") == pytest.approx((4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    assert bleu_4("同样的回答", "同样的回答") == pytest.approx(1.0)
    assert bleu_4("", "参考") == 0.0


def test_score_averages_every_metric() -> None:
    result = score(["abcd", "x"], ["abcd", "y"])  # BLEU 1 and 0 (no character in common)
    assert list(result) == list(METRICS)
    assert result["exact_match"] == 0.5 and result["rouge_l"] == pytest.approx(0.5, **APPROX)
    assert result["bleu_4"] == pytest.approx(0.5)
    assert score([], []) == {}


def test_empty_answers_score_zero_and_two_empties_match() -> None:
    assert rouge("", "参考答案") == {"rouge_1": 0.0, "rouge_2": 0.0, "rouge_l": 0.0}
    assert score([""], [""]) == dict.fromkeys(METRICS, 1.0)


def test_comparison_table_marks_the_better_value() -> None:
    assert lower_is_better("eval_loss") and lower_is_better("perplexity") and not lower_is_better("rouge_l")
    table = comparison_table(
        [
            Column("base", {"eval_loss": 2.5, "rouge_l": 0.1}),
            Column("champion v1", {"eval_loss": 2.0, "rouge_l": 0.3}),
            Column("candidate", {"eval_loss": 2.25, "rouge_l": 0.3, "bleu_4": 0.2}),
        ]
    ).splitlines()
    assert table[0] == "| metric | better | base | champion v1 | candidate |"
    assert "| bleu_4 | higher |  |  | 0.2 |" in table  # one value: nothing to compare
    assert "| eval_loss | lower | 2.5 | **2** | 2.25 |" in table
    assert "| rouge_l | higher | 0.1 | **0.3** | **0.3** |" in table


def test_comparison_table_says_why_a_column_is_empty() -> None:
    table = comparison_table(
        [Column("base", {"eval_loss": 2.5}), Column("champion v4", None, "scored on another eval set")]
    )
    assert "| eval_loss | lower | 2.5 | n/a |" in table
    assert "- champion v4: scored on another eval set" in table
