"""Ordering: dependencies first, cycles together, oldest first among free files, deterministic."""

from __future__ import annotations

import random

from repoctx.deps.graph import DepGraph, backward_violations, order_files, strongly_connected


def graph(edges: dict[str, set[str]], extra: tuple[str, ...] = ()) -> DepGraph:
    nodes = sorted({*edges, *(t for ts in edges.values() for t in ts), *extra})
    return DepGraph(tuple(nodes), {k: frozenset(v) for k, v in edges.items()})


def test_dependencies_come_first() -> None:
    g = graph({"app": {"models", "util"}, "models": {"util"}})
    ordering = order_files(g, {})
    assert ordering.order == ("util", "models", "app")
    assert ordering.cycles == ()


def test_cycle_members_stay_together_and_the_rest_points_backwards() -> None:
    g = graph({"a": {"b"}, "b": {"c"}, "c": {"a", "base"}, "main": {"a"}, "lone": set()})
    ordering = order_files(g, {"lone": 100})
    order = list(ordering.order)
    cycle = set(ordering.cycles[0])
    assert cycle == {"a", "b", "c"}
    positions = sorted(order.index(key) for key in cycle)
    assert positions == list(range(positions[0], positions[0] + 3))
    assert order.index("base") < positions[0] < order.index("main")
    assert backward_violations(order, g, ordering.cycles) == []


def test_least_recently_changed_files_come_first_among_free_files() -> None:
    g = graph({}, extra=("new.py", "old.py", "mid.py"))
    ordering = order_files(g, {"new.py": 300, "old.py": 100, "mid.py": 200})
    assert ordering.order == ("old.py", "mid.py", "new.py")


def test_a_recently_changed_dependency_still_precedes_its_users() -> None:
    g = graph({"old_user": {"hot_dep"}}, extra=("stable",))
    ordering = order_files(g, {"old_user": 1, "hot_dep": 999, "stable": 500})
    assert ordering.order == ("stable", "hot_dep", "old_user")


def test_order_is_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(7)
    names = [f"f{n:03d}" for n in range(200)]
    edges = {n: set(rng.sample(names, 3)) - {n} for n in names}
    ages = {n: rng.randrange(5) for n in names}
    first = order_files(graph(edges), ages)
    shuffled = list(edges.items())
    rng.shuffle(shuffled)
    nodes = list(graph(edges).nodes)
    rng.shuffle(nodes)
    second = order_files(DepGraph(tuple(nodes), {k: frozenset(v) for k, v in shuffled}), ages)
    assert first == second
    assert backward_violations(first.order, graph(edges), first.cycles) == []


def test_violations_are_reported_when_an_order_is_wrong() -> None:
    g = graph({"app": {"lib"}})
    assert backward_violations(["app", "lib"], g, []) == [("app", "lib")]


def test_deep_chains_do_not_recurse() -> None:
    names = [f"m{n}" for n in range(20000)]
    edges = {names[i]: {names[i + 1]} for i in range(len(names) - 1)}
    components = strongly_connected(names, edges)
    assert len(components) == len(names)
    assert order_files(graph(edges), {}).order[0] == names[-1]
