"""The dependency graph between files and the pack order it implies (pure functions).

Order: dependencies before the files that use them; the members of an import cycle stay
together; among files with no constraint between them the least recently changed come first, so
that the front of the pack (and a KV cache of it) survives edits. Same input, same order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
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


def order_files(graph: DepGraph, last_changed: Mapping[str, int]) -> Ordering:
    """Topological order of the import cycles' condensation, oldest ready component first."""
    components = strongly_connected(graph.nodes, graph.edges)
    member_of: dict[str, int] = {}
    for number, component in enumerate(components):
        component.sort(key=lambda key: (last_changed.get(key, 0), key))
        for key in component:
            member_of[key] = number
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
        order.extend(components[number])
        if len(components[number]) > 1:
            cycles.append(tuple(components[number]))
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
