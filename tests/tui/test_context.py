"""The context pane: the pack as a tree, the budget bar, neighbours, excluding from the tree,
and showing or hiding the pane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static
from tui_helpers import MakeApp, ask, notifications, run, settle, tree_lines

from tui.context_pane import ContextPane
from tui.conversation import ConversationView
from tui.pack_tree import PackTree
from tui.prompt_input import PromptInput

TIGHT = [
    "shop  249 tokens · 5 files",
    "  README.md  25",
    "  src/  224",
    "    shop/  224",
    "      money.py  44",
    "      models.py  35",
    "      cart.py  65",
    "      pricing.py  80 · signatures",
    "  not packed  1",
    "    tests/test_cart.py  dropped to fit the budget: test file",
]


async def highlight(pilot: Pilot[Any], label: str) -> None:
    """Put the tree's cursor on the node whose label starts with ``label`` (shown or not)."""
    tree = pilot.app.query_one(PackTree)
    stack = [tree.root]
    while stack:
        node = stack.pop()
        if node.label.plain.startswith(label):
            if node.parent is not None:
                node.parent.expand()
            await pilot.pause()
            tree.focus()
            tree.move_cursor(node)
            await pilot.pause()
            return
        stack.extend(node.children)
    raise AssertionError(f"no node {label!r}")


def details(pilot: Pilot[Any]) -> str:
    return str(pilot.app.query_one("#details", Static).render())


def legend(pilot: Pilot[Any]) -> str:
    return str(pilot.app.query_one(".budget-legend", Static).render())


def test_the_tree_shows_the_pack_in_order_with_counts_and_reasons(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop], budget=350)

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            assert tree_lines(app) == TIGHT
            assert legend(pilot) == "pack 348 · chat 0 · free 7,844 of 8,192"
            await highlight(pilot, "pricing.py")
            assert "reduced to signatures to fit the budget" in details(pilot)
            await highlight(pilot, "cart.py")
            assert details(pilot) == (
                "shop/src/shop/cart.py\npython · source · 65 tokens\n"
                "imports (2): shop/src/shop/models.py, shop/src/shop/money.py\n"
                "imported by (1): shop/tests/test_cart.py"
            )
            await highlight(pilot, "tests/test_cart.py")
            assert "not packed: dropped to fit the budget: test file" in details(pilot)
            await pilot.press("x")
            assert "cannot be packed" in notifications(app)[-1]
            await ask(pilot, "What does total do?")
            assert "chat 0 " not in legend(pilot)

    run(scenario())


def test_files_and_folders_are_excluded_and_brought_back_from_the_tree(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop])

    async def scenario() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            before = legend(pilot)
            await highlight(pilot, "pricing.py")
            await pilot.press("x")
            await settle(pilot)
            assert app.session.settings.exclude == ("/src/shop/pricing.py",)
            assert legend(pilot) != before
            assert "  /src/shop/pricing.py" in tree_lines(app)
            assert app.query_one(PackTree).cursor_node is not None
            await highlight(pilot, "src/shop/pricing.py  ignored")
            await pilot.press("x")  # brings back what the pattern left out
            await settle(pilot)
            assert app.session.settings.exclude == ()
            assert legend(pilot) == before
            await highlight(pilot, "tests/")
            await pilot.press("x")
            await settle(pilot)
            assert app.session.settings.exclude == ("/tests/",)
            await highlight(pilot, "/tests/")
            await pilot.press("x")  # the pattern itself
            await settle(pilot)
            assert app.session.settings.exclude == ()
            await highlight(pilot, "shop  ")
            await pilot.press("x")
            assert "/drop shop" in notifications(app)[-1]

    run(scenario())


def test_ctrl_b_shows_and_hides_the_context_pane(shop: Path, make_app: MakeApp) -> None:
    narrow, wide = make_app([shop]), make_app([shop])

    async def scenario_narrow() -> None:
        async with narrow.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            context, conversation = (
                narrow.query_one(ContextPane),
                narrow.query_one(ConversationView),
            )
            assert not context.display and conversation.display
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert context.display and not conversation.display
            assert narrow.focused is narrow.query_one(PackTree)
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert not context.display and conversation.display
            assert narrow.focused is narrow.query_one(PromptInput)

    async def scenario_wide() -> None:
        async with wide.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            context = wide.query_one(ContextPane)
            assert context.display
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert not context.display
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert context.display

    run(scenario_narrow())
    run(scenario_wide())
