"""A bar of the model's context: the pack, the conversation so far, and what is free. Drawn
in text with the theme's colours (so ANSI themes show it too), to the width it has."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from tui.messages import Usage


class BudgetBar(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.usage: Usage | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="budget-track")
        yield Static("no pack yet", classes="budget-legend", markup=False)

    def show(self, usage: Usage) -> None:
        self.usage = usage
        self.query_one(".budget-legend", Static).update(legend(usage))
        self._draw()

    def on_resize(self, event: events.Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        track = self.query_one(".budget-track", Static)
        if self.usage is None or track.size.width == 0:
            return
        pack, chat, free = cells(self.usage, track.size.width)
        track.update(
            Content.assemble(
                ("█" * pack, "$primary"), ("█" * chat, "$accent"), ("░" * free, "$text-muted")
            )
        )


def cells(usage: Usage, width: int) -> tuple[int, int, int]:
    """The cells of the pack, the conversation and the free part; a part that is not empty
    gets at least one."""
    total = max(1, usage.context)

    def share(tokens: int) -> int:
        return 0 if tokens <= 0 else max(1, round(width * tokens / total))

    pack = min(width, share(usage.pack))
    chat = min(width - pack, share(usage.conversation))
    return pack, chat, width - pack - chat


def legend(usage: Usage) -> str:
    return (
        f"pack {usage.pack:,} · chat {usage.conversation:,} · free {usage.free:,} "
        f"of {usage.context:,}"
    )
