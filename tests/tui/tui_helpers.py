"""Shared pieces of the TUI tests: a small repository with fixed content, fixed answers, the
scripted engine, and helpers that drive the app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from textual.pilot import Pilot
from textual.widgets.tree import TreeNode

from repoctx.engine.base import Engine
from repoctx.engine.fake import FakeEngine
from repoctx.events import EventSink
from repoctx.model.modelfile import ModelInfo
from tui.app import RepoctxApp
from tui.prompt_input import PromptInput

SHOP = {
    "src/shop/money.py": "class Money:\n    def __init__(self, cents: int) -> None:\n"
    "        self.cents = cents\n",
    "src/shop/models.py": "from shop.money import Money\n\n\nclass Item:\n    price: Money\n",
    "src/shop/cart.py": "from .models import Item\nfrom . import money\n\n\n"
    "def total(items: list[Item]) -> money.Money:\n"
    "    return money.Money(sum(i.price.cents for i in items))\n",
    "tests/test_cart.py": "from shop.cart import total\n\n\ndef test_empty():\n"
    "    assert total([]).cents == 0\n",
    "src/shop/pricing.py": "from .money import Money\n\n\n"
    + "".join(
        f"def discount_{n}(price: Money) -> Money:\n"
        + "".join(f"    step_{i} = price.cents * {i} // 100\n" for i in range(8))
        + f"    return Money(price.cents - {n})\n\n\n"
        for n in range(3)
    ),
    "README.md": "# shop\n\nA tiny shop.\n",
}

ANSWER = (
    "`total` adds up the prices:\n\n```python\ndef total(items):\n"
    "    return Money(sum(i.price.cents for i in items))\n```\n\nIt returns **Money**."
)
SECOND_ANSWER = "Use it like this:\n\n```python\ntotal([])\n```"

T = TypeVar("T")
MakeApp = Callable[..., RepoctxApp]


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every job has finished and its messages are shown."""
    app = pilot.app
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


class Engines:
    """Builds scripted engines for sessions and keeps them, to look at their prompts."""

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = {"answers": (ANSWER, SECOND_ANSWER), **options}
        self.made: list[FakeEngine] = []

    def __call__(self, model: ModelInfo, n_ctx: int, on_event: EventSink) -> Engine:
        engine = FakeEngine(n_ctx=n_ctx, **self.options)
        self.made.append(engine)
        return engine


async def ask(pilot: Pilot[Any], question: str) -> None:
    """Type ``question`` into the input and send it, then wait for the answer."""
    await submit(pilot, question)
    await settle(pilot)


async def submit(pilot: Pilot[Any], text: str) -> None:
    prompt = pilot.app.query_one(PromptInput)
    prompt.focus()
    prompt.value = text
    await prompt.action_submit()  # as Enter does, without waiting for the app to be idle
    await pilot.pause(0.05)


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 10) -> None:
    """Let the app run until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("the app did not get there in time")
        await pilot.pause(0.02)


def notifications(app: RepoctxApp) -> list[str]:
    return [n.message for n in app._notifications]


def tree_lines(app: RepoctxApp) -> list[str]:
    """The context tree as text, one node a line, indented by depth (expanded or not)."""
    from tui.pack_tree import PackTree

    lines: list[str] = []

    def walk(node: TreeNode[Any], depth: int) -> None:
        for child in node.children:
            lines.append("  " * depth + child.label.plain)
            walk(child, depth + 1)

    walk(app.query_one(PackTree).root, 0)
    return lines
