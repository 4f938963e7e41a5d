"""A tiny byte-pair-encoding tokenizer, small enough to study.

Training starts from single characters and repeatedly merges the most
frequent adjacent pair.  It is *not* fast; it is meant for teaching.

>>> tok = BpeTokenizer.train(["low lower lowest", "slow slower"], num_merges=4)
>>> tok.merges
[('l', 'o'), ('lo', 'w'), ('low', 'e'), ('lowe', 'r')]
>>> tok.encode("slowest")
['s', 'lowe', 's', 't']
>>> tok.decode(tok.encode("slowest"))
'slowest'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

Pair = tuple[str, str]


def _pair_counts(corpus: dict[tuple[str, ...], int]) -> Counter[Pair]:
    counts: Counter[Pair] = Counter()
    for symbols, freq in corpus.items():
        for left, right in zip(symbols, symbols[1:]):
            counts[(left, right)] += freq
    return counts


def _apply_merge(symbols: tuple[str, ...], pair: Pair) -> tuple[str, ...]:
    """Merge every occurrence of ``pair`` inside ``symbols``.

    >>> _apply_merge(("a", "b", "a", "b", "c"), ("a", "b"))
    ('ab', 'ab', 'c')
    """
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


@dataclass
class BpeTokenizer:
    """Ordered list of merges learned from a corpus."""

    merges: list[Pair] = field(default_factory=list)

    @classmethod
    def train(cls, texts: list[str], num_merges: int) -> "BpeTokenizer":
        """Learn up to ``num_merges`` merges from whitespace-split ``texts``.

        Ties between equally frequent pairs are broken by the pair itself so
        training is deterministic.

        >>> BpeTokenizer.train(["aaaa"], num_merges=2).merges
        [('a', 'a'), ('aa', 'aa')]
        """
        words: Counter[str] = Counter()
        for text in texts:
            words.update(text.split())
        corpus = {tuple(word): freq for word, freq in words.items()}
        merges: list[Pair] = []
        for _ in range(num_merges):
            counts = _pair_counts(corpus)
            if not counts:
                break
            best = min(counts, key=lambda pair: (-counts[pair], pair))
            merges.append(best)
            corpus = {_apply_merge(symbols, best): freq for symbols, freq in corpus.items()}
        return cls(merges)

    def encode_word(self, word: str) -> list[str]:
        """Split one word into sub-word tokens.

        >>> BpeTokenizer([("h", "i")]).encode_word("hihi")
        ['hi', 'hi']
        >>> BpeTokenizer([("h", "i")]).encode_word("shift")
        ['s', 'hi', 'f', 't']
        """
        symbols = tuple(word)
        for pair in self.merges:
            symbols = _apply_merge(symbols, pair)
        return list(symbols)

    def encode(self, text: str) -> list[str]:
        """Encode text; a ``'▁'`` marker starts every word after the first.

        >>> BpeTokenizer().encode("a b")
        ['a', '▁', 'b']
        """
        tokens: list[str] = []
        for index, word in enumerate(text.split()):
            if index:
                tokens.append("▁")
            tokens.extend(self.encode_word(word))
        return tokens

    @staticmethod
    def decode(tokens: list[str]) -> str:
        """Invert :meth:`encode`.

        >>> BpeTokenizer.decode(['lo', 'w', '▁', 'key'])
        'low key'
        """
        return "".join(" " if token == "▁" else token for token in tokens)

    def vocabulary(self) -> set[str]:
        """Return every token that a merge can produce.

        >>> sorted(BpeTokenizer([("a", "b"), ("ab", "c")]).vocabulary())
        ['ab', 'abc']
        """
        return {left + right for left, right in self.merges}


if __name__ == "__main__":
    sample = ["the theme of the thesis", "there then these"]
    tokenizer = BpeTokenizer.train(sample, num_merges=6)
    print("merges:", tokenizer.merges)
    print(tokenizer.encode("the thesis there"))
