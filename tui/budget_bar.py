"""A bar of the model's context: the pack, the conversation so far, and what is free."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from tui.messages import Usage

PARTS = ("pack", "conversation", "free")


class BudgetBar(Vertical):
    def compose(self) -> ComposeResult:
        with Horizontal(classes="budget-track"):
            for part in PARTS:
                yield Static("", classes=f"budget-{part}")
        yield Static("no pack yet", classes="budget-legend", markup=False)

    def show(self, usage: Usage) -> None:
        sizes = {"pack": usage.pack, "conversation": usage.conversation, "free": usage.free}
        for part, tokens in sizes.items():
            self.query_one(f".budget-{part}", Static).styles.width = f"{tokens}fr"
        self.query_one(".budget-legend", Static).update(legend(usage))


def legend(usage: Usage) -> str:
    return (
        f"pack {usage.pack:,} · chat {usage.conversation:,} · free {usage.free:,} "
        f"of {usage.context:,}"
    )
