"""Operations on closed integer intervals such as meeting slots.

>>> merge([(1, 3), (2, 6), (8, 10), (15, 18), (17, 20)])
[(1, 6), (8, 10), (15, 20)]
"""

from __future__ import annotations

from typing import Iterable

Interval = tuple[int, int]


def merge(intervals: Iterable[Interval], touch: bool = False) -> list[Interval]:
    """Merge overlapping intervals and return them sorted.

    With ``touch=True`` intervals that only meet end to start, such as
    ``(1, 2)`` and ``(3, 4)``, are also joined.

    >>> merge([(5, 7), (1, 2), (3, 4)])
    [(1, 2), (3, 4), (5, 7)]
    >>> merge([(5, 7), (1, 2), (3, 4)], touch=True)
    [(1, 7)]
    >>> merge([])
    []
    """
    gap = 1 if touch else 0
    result: list[Interval] = []
    for start, end in sorted(intervals):
        if start > end:
            raise ValueError(f"interval ({start}, {end}) ends before it starts")
        if result and start <= result[-1][1] + gap:
            prev_start, prev_end = result[-1]
            result[-1] = (prev_start, max(prev_end, end))
        else:
            result.append((start, end))
    return result


def free_slots(busy: Iterable[Interval], day: Interval) -> list[Interval]:
    """Return the gaps inside ``day`` that no busy interval covers.

    Busy intervals are half-open here: ``(9, 10)`` blocks 9:00-10:00.

    >>> free_slots([(9, 10), (12, 13), (9, 11)], day=(8, 17))
    [(8, 9), (11, 12), (13, 17)]
    >>> free_slots([(7, 18)], day=(8, 17))
    []
    """
    start_of_day, end_of_day = day
    cursor = start_of_day
    gaps: list[Interval] = []
    for start, end in merge(busy):
        if end <= cursor:
            continue
        if start > cursor:
            gaps.append((cursor, min(start, end_of_day)))
        cursor = max(cursor, end)
        if cursor >= end_of_day:
            break
    if cursor < end_of_day:
        gaps.append((cursor, end_of_day))
    return [(a, b) for a, b in gaps if a < b]


def total_length(intervals: Iterable[Interval]) -> int:
    """Total length covered, counting overlaps once.

    >>> total_length([(0, 5), (3, 8), (10, 12)])
    10
    """
    return sum(end - start for start, end in merge(intervals))
