"""Convert between integers and Roman numerals (1 to 3999).

>>> to_roman(2026)
'MMXXVI'
>>> from_roman("MCMXCIV")
1994
>>> all(from_roman(to_roman(n)) == n for n in range(1, 4000))
True
"""

from __future__ import annotations

import re

_SYMBOLS = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]

_VALID = re.compile(
    r"^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$"
)


def to_roman(number: int) -> str:
    """Return the canonical Roman numeral for ``number``.

    >>> to_roman(4), to_roman(9), to_roman(14), to_roman(3999)
    ('IV', 'IX', 'XIV', 'MMMCMXCIX')
    >>> to_roman(0)
    Traceback (most recent call last):
    ...
    ValueError: Roman numerals cover 1..3999, got 0
    """
    if not isinstance(number, int) or isinstance(number, bool):
        raise TypeError("expected an int")
    if not 1 <= number <= 3999:
        raise ValueError(f"Roman numerals cover 1..3999, got {number}")
    parts = []
    for value, symbol in _SYMBOLS:
        count, number = divmod(number, value)
        parts.append(symbol * count)
    return "".join(parts)


def from_roman(text: str) -> int:
    """Parse a canonical Roman numeral; case-insensitive.

    >>> from_roman("xlii")
    42
    >>> from_roman("IIII")
    Traceback (most recent call last):
    ...
    ValueError: not a canonical Roman numeral: 'IIII'
    """
    numeral = text.strip().upper()
    if not numeral or not _VALID.match(numeral):
        raise ValueError(f"not a canonical Roman numeral: {text!r}")
    total = 0
    index = 0
    for value, symbol in _SYMBOLS:
        while numeral.startswith(symbol, index):
            total += value
            index += len(symbol)
    return total
