"""Word error rate: how many words a transcript got wrong against the words really said (substitutions, deletions
and insertions over the number of words said), after the usual normalisation: case, punctuation and width folded,
numbers left as written. Chinese, Japanese and Korean text is compared character by character (the character
error rate), since it has no spaces between words."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from core.speech.types import is_cjk

_CJK_CHAR = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff])")


def normalise(text: str) -> list[str]:
    """The words of `text` for scoring: NFKC, lower case, punctuation removed (apostrophes inside words kept), each
    CJK character a word of its own."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = "".join(ch if not unicodedata.category(ch).startswith(("P", "S")) or ch == "'" else " " for ch in text)
    text = _CJK_CHAR.sub(r" \1 ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


@dataclass(frozen=True)
class WerResult:
    """substitutions + deletions + insertions over `reference_words` (the words said)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    hypothesis_words: int

    @property
    def errors(self) -> int:
        """Words wrong, missing or extra."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """The word error rate (0: every word right; can exceed 1 with many extra words)."""
        return self.errors / self.reference_words if self.reference_words else float(self.hypothesis_words > 0)

    def describe(self) -> str:
        """'WER 0.18 (9 of 50 words: 5 wrong, 3 missing, 1 extra)'."""
        return (f"WER {self.wer:.2f} ({self.errors} of {self.reference_words} words: {self.substitutions} wrong, "
                f"{self.deletions} missing, {self.insertions} extra)")


def word_errors(reference: str, hypothesis: str) -> WerResult:
    """The alignment of `hypothesis` to `reference` with the fewest edits, counted by kind."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    # dp[j] = (cost, subs, dels, ins) aligning ref[:i] with hyp[:j]
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            same = ref[i - 1] == hyp[j - 1]
            d = prev[j - 1]
            options = [
                (d[0] + (0 if same else 1), d[1] + (0 if same else 1), d[2], d[3]),
                (prev[j][0] + 1, prev[j][1], prev[j][2] + 1, prev[j][3]),
                (cur[j - 1][0] + 1, cur[j - 1][1], cur[j - 1][2], cur[j - 1][3] + 1),
            ]
            cur.append(min(options))
        prev = cur
    _, subs, dels, ins = prev[-1]
    return WerResult(subs, dels, ins, len(ref), len(hyp))


def wer(reference: str, hypothesis: str) -> float:
    """The word error rate of `hypothesis` against `reference` (character error rate for CJK text)."""
    return word_errors(reference, hypothesis).wer


__all__ = ["WerResult", "is_cjk", "normalise", "wer", "word_errors"]
