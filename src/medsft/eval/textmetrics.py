"""Answer-text metrics that need no model: ROUGE-L, distinct-n, repetition, key-fact recall.

All of them count the same tokens (`tokens`): each CJK character is a token, a run of letters
or digits is a token, case is folded and punctuation dropped. So ROUGE-L on a Chinese answer is
character-level and on an English answer word-level, which is how both are usually reported.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from medsft.eval.matching import contains_fact

# Han (with extension A, compatibility ideographs and the supplementary planes) and kana.
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# One CJK character, or a run of letters/digits that are not CJK ([^\W_] is "letter or digit").
_TOKEN = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+")


def has_cjk(text: str) -> bool:
    return _CJK_CHAR.search(text) is not None


def tokens(text: str) -> list[str]:
    """CJK characters one by one and runs of letters/digits, lowercased; punctuation and spaces dropped.

    NFKC first, so full-width letters and digits count as their ASCII forms.
    """
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) of `candidate` against `reference`; 0.0 when either has no tokens."""
    candidate_tokens, reference_tokens = tokens(candidate), tokens(reference)
    if not candidate_tokens or not reference_tokens:
        return 0.0
    common = lcs_length(candidate_tokens, reference_tokens)
    if common == 0:
        return 0.0
    precision = common / len(candidate_tokens)
    recall = common / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence: O(len(a) * len(b)) time, two rows of memory."""
    if len(b) > len(a):
        a, b = b, a  # rows run over the shorter sequence
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            if token_a == token_b:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def ngrams(token_list: list[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(token_list[i : i + n]) for i in range(len(token_list) - n + 1)]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams, pooled over `texts` (n-grams do not cross texts); 0.0 when none."""
    counts = Counter(gram for text in texts for gram in ngrams(tokens(text), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def fact_recall(text: str, facts: list[str]) -> float:
    """Share of `facts` that appear in `text` (`contains_fact`: case, width and punctuation folded)."""
    if not facts:
        raise ValueError("fact_recall needs at least one fact")
    return sum(contains_fact(text, fact) for fact in facts) / len(facts)
