"""The dependency graph between files and the pack order it implies (pure functions).

Order: dependencies before the files that use them; the members of an import cycle stay
together, and inside a cycle imported files still come before their importers wherever the cycle
allows; among files with no constraint between them the least recently changed come first, so
that the front of the pack (and a KV cache of it) survives edits. Same input, same order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DepGraph:
    """``edges[a]`` holds the files ``a`` imports (never ``a`` itself)."""

    nodes: tuple[str, ...]
    edges: Mapping[str, frozenset[str]]

    def dependents(self) -> dict[str, set[str]]:
        """File -> the files that import it."""
        result: dict[str, set[str]] = {node: set() for node in self.nodes}
        for source, targets in self.edges.items():
            for target in targets:
                result[target].add(source)
        return result

    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())


@dataclass(frozen=True)
class Ordering:
    order: tuple[str, ...]
    cycles: tuple[tuple[str, ...], ...]  # components of more than one file, each in pack order


def strongly_connected(nodes: Iterable[str], edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion (deep import chains exist)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(edges.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


class _CycleLayout:
    """The members of one cycle not placed yet, with their imports and importers among them, and
    heaps of member ranks (lower is older) that may hold stale entries, checked when popped."""

    def __init__(self, members: Sequence[str], edges: Mapping[str, Iterable[str]]) -> None:
        self.members = members
        self.rank = {key: number for number, key in enumerate(members)}
        self.imports = {
            key: {t for t in edges.get(key, ()) if t in self.rank and t != key} for key in members
        }
        self.importers: dict[str, set[str]] = {key: set() for key in members}
        for key, targets in self.imports.items():
            for target in targets:
                self.importers[target].add(key)
        self.sources: list[int] = []  # import no member left; oldest first
        self.sinks: list[int] = []  # imported by no member left; negated ranks, newest first
        self.surpluses: list[tuple[int, int]] = []  # (imports - importers, rank)
        for key in members:
            self._queue(key)

    def surplus(self, key: str) -> int:
        return len(self.imports[key]) - len(self.importers[key])

    def _queue(self, key: str) -> None:
        rank = self.rank[key]
        if not self.imports[key]:
            heapq.heappush(self.sources, rank)
        elif not self.importers[key]:
            heapq.heappush(self.sinks, -rank)
        else:
            heapq.heappush(self.surpluses, (self.surplus(key), rank))

    def _left(self, rank: int) -> str | None:
        key = self.members[rank]
        return key if key in self.imports else None

    def pop_source(self) -> str | None:
        while self.sources:
            if (key := self._left(heapq.heappop(self.sources))) is not None:
                return key
        return None

    def pop_sink(self) -> str | None:
        while self.sinks:
            if (key := self._left(-heapq.heappop(self.sinks))) is not None:
                return key
        return None

    def pop_most_imported(self) -> str:
        """Callable while some member is left and none is a source or a sink: each such member
        has an entry with its current surplus."""
        while True:
            surplus, rank = heapq.heappop(self.surpluses)
            key = self._left(rank)
            if key is not None and surplus == self.surplus(key):
                return key

    def remove(self, key: str) -> None:
        for target in self.imports.pop(key):
            self.importers[target].discard(key)
            self._queue(target)
        for user in self.importers.pop(key):
            self.imports[user].discard(key)
            self._queue(user)


def order_cycle(members: Sequence[str], edges: Mapping[str, Iterable[str]]) -> list[str]:
    """The members of one import cycle, imported files before their importers as far as the
    cycle allows (the greedy heuristic of Eades, Lin and Smyth for few edges pointing forwards):
    next comes a member that imports no member left; failing that, a member that no member left
    imports goes to the back; failing that, the member imported by the most members left, net
    of those it imports, comes next. ``members`` come oldest first; ties go to the oldest, and
    the back fills with the newest last."""
    layout = _CycleLayout(members, edges)
    front: list[str] = []
    back: list[str] = []
    while layout.imports:
        if (key := layout.pop_source()) is not None:
            front.append(key)
        elif (key := layout.pop_sink()) is not None:
            back.append(key)
        else:
            key = layout.pop_most_imported()
            front.append(key)
        layout.remove(key)
    return front + back[::-1]


def order_files(graph: DepGraph, last_changed: Mapping[str, int]) -> Ordering:
    """Topological order of the import cycles' condensation, oldest ready component first."""
    components = strongly_connected(graph.nodes, graph.edges)
    member_of: dict[str, int] = {}
    for number, component in enumerate(components):
        component.sort(key=lambda key: (last_changed.get(key, 0), key))
        for key in component:
            member_of[key] = number
    packed = [order_cycle(c, graph.edges) if len(c) > 1 else c for c in components]
    waiting_on = [0] * len(components)
    unblocks: list[set[int]] = [set() for _ in components]
    for source, targets in graph.edges.items():
        for target in targets:
            a, b = member_of[source], member_of[target]
            if a != b and a not in unblocks[b]:
                unblocks[b].add(a)
                waiting_on[a] += 1

    def priority(number: int) -> tuple[int, str]:
        members = components[number]
        return (max(last_changed.get(key, 0) for key in members), members[0])

    ready = [(priority(n), n) for n in range(len(components)) if waiting_on[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    cycles: list[tuple[str, ...]] = []
    while ready:
        _, number = heapq.heappop(ready)
        order.extend(packed[number])
        if len(packed[number]) > 1:
            cycles.append(tuple(packed[number]))
        for follower in unblocks[number]:
            waiting_on[follower] -= 1
            if waiting_on[follower] == 0:
                heapq.heappush(ready, (priority(follower), follower))
    return Ordering(tuple(order), tuple(cycles))


def backward_violations(
    order: Iterable[str], graph: DepGraph, cycles: Iterable[Iterable[str]]
) -> list[tuple[str, str]]:
    """Edges that point forward in ``order`` between files not in the same cycle (should be
    none); used by tests and by ``pack --graph`` as a self-check."""
    position = {key: i for i, key in enumerate(order)}
    cycle_of = {key: n for n, members in enumerate(cycles) for key in members}
    bad = []
    for source, targets in graph.edges.items():
        for target in targets:
            same_cycle = source in cycle_of and cycle_of.get(target) == cycle_of[source]
            if not same_cycle and position[target] > position[source]:
                bad.append((source, target))
    return sorted(bad)
