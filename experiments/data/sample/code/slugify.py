"""Turn titles into URL-friendly slugs.

>>> slugify("Crème Brûlée: A Beginner's Guide!")
'creme-brulee-a-beginners-guide'
>>> slugify("  Hello   World  ", separator="_")
'hello_world'
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = re.compile(r"['’]")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slugify(title: str, separator: str = "-", max_length: int = 60) -> str:
    """Lower-case ASCII slug; accents are stripped, other symbols dropped.

    The slug is cut at a separator so words are never split in half.

    >>> slugify("Ünïcödé — ümlauts & more", max_length=15)
    'unicode-umlauts'
    >>> slugify("Ünïcödé — ümlauts & more", max_length=12)
    'unicode'
    >>> slugify("???")
    ''
    """
    normalized = unicodedata.normalize("NFKD", title)
    ascii_text = normalized.encode("ascii", "ignore").decode("ascii").lower()
    ascii_text = _APOSTROPHES.sub("", ascii_text)
    slug = _NON_WORD.sub(separator, ascii_text).strip(separator)
    if len(slug) > max_length:
        if slug[max_length] == separator:
            slug = slug[:max_length]
        else:
            cut = slug[:max_length]
            slug = cut.rsplit(separator, 1)[0] if separator in cut else cut
    return slug


def unique_slug(title: str, taken: set[str]) -> str:
    """Return a slug not in ``taken`` by appending -2, -3, ... as needed.

    >>> unique_slug("Report", {"report", "report-2"})
    'report-3'
    """
    base = slugify(title) or "untitled"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
