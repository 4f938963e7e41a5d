"""Shortest paths and ordering on small directed graphs.

Graphs are plain dictionaries: ``{node: {neighbour: weight, ...}, ...}``.

>>> roads = {
...     "A": {"B": 4, "C": 1},
...     "C": {"B": 2, "D": 7},
...     "B": {"D": 1},
... }
>>> shortest_path(roads, "A", "D")
(4, ['A', 'C', 'B', 'D'])
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Hashable, Mapping

Graph = Mapping[Hashable, Mapping[Hashable, float]]


def shortest_path(graph: Graph, source: Hashable, target: Hashable) -> tuple[float, list]:
    """Dijkstra's algorithm; weights must be non-negative.

    Returns ``(distance, path)``; an unreachable target gives
    ``(inf, [])``.

    >>> shortest_path({"a": {"b": 1}}, "b", "a")
    (inf, [])
    >>> shortest_path({"a": {}}, "a", "a")
    (0, ['a'])
    """
    distances: dict[Hashable, float] = {source: 0}
    previous: dict[Hashable, Hashable] = {}
    queue: list[tuple[float, int, Hashable]] = [(0, 0, source)]
    tie = 1
    visited: set[Hashable] = set()
    while queue:
        dist, _, node = heapq.heappop(queue)
        if node in visited:
            continue
        visited.add(node)
        if node == target:
            break
        for neighbour, weight in graph.get(node, {}).items():
            if weight < 0:
                raise ValueError("negative edge weight")
            candidate = dist + weight
            if candidate < distances.get(neighbour, float("inf")):
                distances[neighbour] = candidate
                previous[neighbour] = node
                heapq.heappush(queue, (candidate, tie, neighbour))
                tie += 1
    if target not in visited:
        return float("inf"), []
    path = [target]
    while path[-1] != source:
        path.append(previous[path[-1]])
    return distances[target], path[::-1]


def bfs_order(graph: Graph, start: Hashable) -> list:
    """Nodes reachable from ``start`` in breadth-first order.

    Neighbours are visited in insertion order of the mapping.

    >>> bfs_order({1: {2: 1, 3: 1}, 2: {4: 1}, 3: {4: 1}}, 1)
    [1, 2, 3, 4]
    """
    seen = {start}
    order = []
    queue = deque([start])
    while queue:
        node = queue.popleft()
        order.append(node)
        for neighbour in graph.get(node, {}):
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return order


def topological_sort(graph: Graph) -> list:
    """Kahn's algorithm; raises ``ValueError`` when there is a cycle.

    Among nodes that are ready at the same time the smallest comes first,
    so the result is deterministic for sortable node names.

    >>> topological_sort({"shirt": {"tie": 1}, "tie": {"jacket": 1}, "trousers": {"shoes": 1, "jacket": 1}})
    ['shirt', 'tie', 'trousers', 'jacket', 'shoes']
    >>> topological_sort({"x": {"y": 1}, "y": {"x": 1}})
    Traceback (most recent call last):
    ...
    ValueError: graph has a cycle
    """
    indegree: dict[Hashable, int] = {}
    for node, edges in graph.items():
        indegree.setdefault(node, 0)
        for neighbour in edges:
            indegree[neighbour] = indegree.get(neighbour, 0) + 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for neighbour in graph.get(node, {}):
            indegree[neighbour] -= 1
            if indegree[neighbour] == 0:
                heapq.heappush(ready, neighbour)
    if len(order) != len(indegree):
        raise ValueError("graph has a cycle")
    return order
