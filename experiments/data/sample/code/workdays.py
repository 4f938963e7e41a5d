"""Date helpers for planning work around weekends and holidays.

>>> from datetime import date
>>> add_workdays(date(2026, 3, 6), 1)        # Friday + 1 working day
datetime.date(2026, 3, 9)
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Iterable, Iterator

WEEKEND = frozenset({5, 6})  # Saturday, Sunday as returned by date.weekday()


def parse_iso(text: str) -> date:
    """Parse ``YYYY-MM-DD`` and raise ``ValueError`` with a clear message.

    >>> parse_iso("2026-02-28")
    datetime.date(2026, 2, 28)
    >>> parse_iso("2026-02-30")
    Traceback (most recent call last):
    ...
    ValueError: not a valid date: '2026-02-30'
    """
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a valid date: {text!r}") from None


def is_workday(day: date, holidays: Iterable[date] = ()) -> bool:
    """Return True when ``day`` is neither a weekend day nor a holiday.

    >>> is_workday(date(2026, 1, 3))
    False
    >>> is_workday(date(2026, 1, 5), holidays=[date(2026, 1, 5)])
    False
    >>> is_workday(date(2026, 1, 6))
    True
    """
    return day.weekday() not in WEEKEND and day not in set(holidays)


def add_workdays(start: date, count: int, holidays: Iterable[date] = ()) -> date:
    """Move ``count`` working days forward (or backward when negative).

    The start day itself is never counted.

    >>> add_workdays(date(2026, 3, 9), -1)
    datetime.date(2026, 3, 6)
    >>> add_workdays(date(2026, 12, 23), 2, holidays=[date(2026, 12, 24), date(2026, 12, 25)])
    datetime.date(2026, 12, 29)
    >>> add_workdays(date(2026, 5, 4), 0)
    datetime.date(2026, 5, 4)
    """
    off = set(holidays)
    step = timedelta(days=1 if count >= 0 else -1)
    remaining = abs(count)
    current = start
    while remaining:
        current += step
        if is_workday(current, off):
            remaining -= 1
    return current


def workdays_between(start: date, end: date, holidays: Iterable[date] = ()) -> int:
    """Count working days in the half-open range ``[start, end)``.

    >>> workdays_between(date(2026, 3, 2), date(2026, 3, 16))
    10
    >>> workdays_between(date(2026, 3, 16), date(2026, 3, 2))
    0
    """
    off = set(holidays)
    return sum(1 for day in date_range(start, end) if is_workday(day, off))


def date_range(start: date, end: date) -> Iterator[date]:
    """Yield each date from ``start`` up to but not including ``end``.

    >>> [d.day for d in date_range(date(2026, 1, 30), date(2026, 2, 2))]
    [30, 31, 1]
    """
    current = start
    while current < end:
        yield current
        current += timedelta(days=1)


def quarter(day: date) -> str:
    """Return a label such as ``'2026-Q3'``.

    >>> quarter(date(2026, 8, 15))
    '2026-Q3'
    """
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def last_day_of_month(day: date) -> date:
    """Return the final day of the month containing ``day``.

    >>> last_day_of_month(date(2028, 2, 10))
    datetime.date(2028, 2, 29)
    >>> last_day_of_month(date(2026, 12, 1))
    datetime.date(2026, 12, 31)
    """
    first_of_next = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first_of_next - timedelta(days=1)
