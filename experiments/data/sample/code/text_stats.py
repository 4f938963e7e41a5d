"""Simple statistics over plain text.

The helpers here are deliberately small so they can be read in one
sitting.  They work on ``str`` input and never touch the file system.

>>> summary = summarize("The cat sat. The cat ran!")
>>> summary.words, summary.sentences
(6, 2)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+")


@dataclass(frozen=True)
class TextSummary:
    """Counts collected by :func:`summarize`."""

    characters: int
    words: int
    sentences: int
    unique_words: int

    @property
    def average_word_length(self) -> float:
        """Mean number of characters per word (0.0 for empty text)."""
        if self.words == 0:
            return 0.0
        return round(self.characters / self.words, 2)


def words(text: str) -> list[str]:
    """Return the words of ``text`` in lower case.

    Apostrophes inside a word are kept, punctuation is dropped.

    >>> words("Don't panic, it's only Tuesday.")
    ["don't", 'panic', "it's", 'only', 'tuesday']
    >>> words("")
    []
    """
    return [match.group(0).lower() for match in _WORD_RE.finditer(text)]


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences on terminal punctuation.

    >>> sentences("One. Two? Three!  Four")
    ['One.', 'Two?', 'Three!', 'Four']
    >>> sentences("   ")
    []
    """
    stripped = text.strip()
    if not stripped:
        return []
    return [part.strip() for part in _SENTENCE_END_RE.split(stripped) if part.strip()]


def top_words(text: str, n: int = 3, stopwords: frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    """Return the ``n`` most frequent words, ties broken alphabetically.

    >>> top_words("b a b c a b", n=2)
    [('b', 3), ('a', 2)]
    >>> top_words("the sun and the moon", n=2, stopwords=frozenset({"the", "and"}))
    [('moon', 1), ('sun', 1)]
    """
    counts = Counter(w for w in words(text) if w not in stopwords)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n]


def summarize(text: str) -> TextSummary:
    """Collect basic counts for ``text``.

    Only letters and digits inside words count towards ``characters``.

    >>> s = summarize("Hello hello world.")
    >>> s.unique_words, s.average_word_length
    (2, 5.0)
    """
    tokens = words(text)
    letters = sum(len(token.replace("'", "").replace("’", "")) for token in tokens)
    return TextSummary(
        characters=letters,
        words=len(tokens),
        sentences=len(sentences(text)),
        unique_words=len(set(tokens)),
    )


if __name__ == "__main__":
    import sys

    data = sys.stdin.read()
    result = summarize(data)
    print(f"words={result.words} sentences={result.sentences} "
          f"unique={result.unique_words} avg_len={result.average_word_length}")
    for word, count in top_words(data, n=5):
        print(f"{count:5d}  {word}")
