"""Reasoning blocks of a chat template (Qwen3, DeepSeek-R1, GLM-4.5, Seed-OSS): where the block goes,
how a reply's reasoning is split from its answer, and the switches that differ between families."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thinking:
    """Reasoning blocks (Qwen3 style): `open` + reasoning + `close` before the answer."""

    open: str
    close: str
    enabled: bool
    trim_answer: bool = True  # False: a reply keeps the text after `close` as is (DeepSeek-R1)
    keep_empty: bool = False  # replies that keep no reasoning still carry the empty block (GLM-4.5)
    sep: str = ""  # written between the block and a non-empty answer (GLM-4.5: "\n")
    off_suffix: str = ""  # thinking off: appended to every user turn (GLM-4.5: "/nothink")
    write_empty: bool = True  # False: a last reply without reasoning gets no block at all (Seed-OSS)

    @property
    def empty(self) -> str:
        return self.open + self.close

    def split(self, content: str) -> tuple[str, str]:
        """(reasoning, answer) of an assistant content, as the official Qwen3 template splits it."""
        start, end = self.open.strip(), self.close.strip()
        if end not in content:
            return "", content
        reasoning = content.split(end)[0].rstrip("\n").split(start)[-1].lstrip("\n")
        answer = content.split(end)[-1]
        return reasoning, answer.lstrip("\n") if self.trim_answer else answer
