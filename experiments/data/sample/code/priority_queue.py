"""A binary-heap priority queue whose priorities can be changed.

The standard :mod:`heapq` module has no "decrease key" operation.  This
class keeps a map from item to heap entry and marks replaced entries as
removed, which is the lazy-deletion trick described in the ``heapq`` docs.

>>> pq = PriorityQueue()
>>> pq.push("write report", 3)
>>> pq.push("drink water", 1)
>>> pq.push("answer email", 2)
>>> pq.push("write report", 0)      # re-prioritise an existing task
>>> [pq.pop() for _ in range(len(pq))]
['write report', 'drink water', 'answer email']
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, Hashable, Iterator, TypeVar

T = TypeVar("T", bound=Hashable)

_REMOVED = object()


class PriorityQueue(Generic[T]):
    """Min-priority queue; items with equal priority leave in FIFO order."""

    def __init__(self) -> None:
        self._heap: list[list[object]] = []
        self._entries: dict[T, list[object]] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: object) -> bool:
        return item in self._entries

    def push(self, item: T, priority: float) -> None:
        """Add ``item`` or change its priority if it is already queued."""
        if item in self._entries:
            self.remove(item)
        entry: list[object] = [priority, next(self._counter), item]
        self._entries[item] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, item: T) -> None:
        """Remove ``item``; raise :class:`KeyError` if it is absent.

        >>> pq = PriorityQueue()
        >>> pq.remove("ghost")
        Traceback (most recent call last):
        ...
        KeyError: 'ghost'
        """
        entry = self._entries.pop(item)
        entry[-1] = _REMOVED

    def _discard_removed(self) -> None:
        while self._heap and self._heap[0][-1] is _REMOVED:
            heapq.heappop(self._heap)

    def peek(self) -> tuple[T, float]:
        """Return ``(item, priority)`` of the smallest entry without removing it.

        >>> pq = PriorityQueue()
        >>> pq.push("b", 2.5); pq.push("a", 1.0)
        >>> pq.peek()
        ('a', 1.0)
        """
        self._discard_removed()
        if not self._heap:
            raise IndexError("peek from an empty priority queue")
        priority, _, item = self._heap[0]
        return item, priority  # type: ignore[return-value]

    def pop(self) -> T:
        """Remove and return the item with the smallest priority.

        >>> PriorityQueue().pop()
        Traceback (most recent call last):
        ...
        IndexError: pop from an empty priority queue
        """
        self._discard_removed()
        if not self._heap:
            raise IndexError("pop from an empty priority queue")
        _, _, item = heapq.heappop(self._heap)
        del self._entries[item]  # type: ignore[arg-type]
        return item  # type: ignore[return-value]

    def drain(self) -> Iterator[T]:
        """Yield items in priority order until the queue is empty.

        >>> pq = PriorityQueue()
        >>> for word, p in [("c", 3), ("a", 1), ("b", 2), ("a2", 1)]:
        ...     pq.push(word, p)
        >>> list(pq.drain())
        ['a', 'a2', 'b', 'c']
        """
        while self:
            yield self.pop()
