"""The context pane: what the model sees. The budget bar, the pack as a tree, and the details
of the highlighted file (its reason when not packed whole, what it imports and what imports
it)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, Tree

from repoctx.pack.pipeline import PackResult
from repoctx.scan.snapshot import SkipReason
from tui.budget_bar import BudgetBar
from tui.controller import Change, exclude, include_again, path_pattern
from tui.messages import Usage
from tui.pack_tree import Entry, Kind, PackTree

NEIGHBOURS_SHOWN = 6


class ContextPane(Vertical):
    class ChangeAsked(Message):
        """Change the session this way and pack again; ``doing`` and ``done`` say what for
        the status line, while it happens and after."""

        def __init__(self, change: Change, doing: str, done: str) -> None:
            super().__init__()
            self.change = change
            self.doing = doing
            self.done = done

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.result: PackResult | None = None
        self.excluded: tuple[str, ...] = ()
        self._dependents: dict[str, set[str]] = {}

    def compose(self) -> ComposeResult:
        yield BudgetBar(id="budget")
        yield PackTree(id="pack-tree")
        yield Static("packing…", id="details", markup=False)

    def show_pack(self, result: PackResult, usage: Usage, excluded: tuple[str, ...]) -> None:
        self.result, self.excluded = result, excluded
        self._dependents = result.graph.dependents()
        count = len(result.pack.segments)
        self.border_title = f"context · {count:,} file{'' if count == 1 else 's'}"
        self.query_one(BudgetBar).show(usage)
        self.query_one(PackTree).show(result, excluded)
        self.query_one("#details", Static).update("")

    def show_usage(self, usage: Usage) -> None:
        self.query_one(BudgetBar).show(usage)

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[Entry]) -> None:
        entry = event.node.data
        text = self.describe(entry) if entry is not None else ""
        self.query_one("#details", Static).update(text)

    def describe(self, entry: Entry) -> str:
        if entry.kind == Kind.OMITTED:
            return (
                f"{entry.key}\nnot packed: {entry.reason}\nx: bring back when a pattern left it out"
            )
        if entry.kind == Kind.PATTERN:
            return f"exclude pattern {entry.key}\nx: include again"
        if entry.kind in (Kind.ROOT, Kind.FOLDER):
            return f"{entry.key}/ · {entry.tokens:,} tokens\nx: leave out"
        if entry.kind != Kind.FILE or entry.segment is None:
            return ""
        file = entry.segment.file
        lines = [
            entry.key,
            f"{file.language or 'text'} · {file.kind.value} · {entry.tokens:,} tokens",
        ]
        if entry.reason:
            lines.append(entry.reason)
        uses = sorted(self.result.graph.edges.get(entry.key, ())) if self.result else []
        users = sorted(self._dependents.get(entry.key, ()))
        lines.append(_neighbours("imports", uses))
        lines.append(_neighbours("imported by", users))
        return "\n".join(lines)

    @on(PackTree.ExclusionToggled)
    def _toggle(self, event: PackTree.ExclusionToggled) -> None:
        entry = event.entry
        if entry.kind == Kind.ROOT:
            self.notify(f"to leave out the whole repository, type /drop {entry.key}")
        elif entry.kind in (Kind.FILE, Kind.FOLDER):
            pattern = path_pattern(entry.path) + ("/" if entry.kind == Kind.FOLDER else "")
            doing, done = f"leaving out {entry.key}", f"left out {entry.key}"
            self.post_message(self.ChangeAsked(exclude(pattern), doing, done))
        elif entry.kind == Kind.PATTERN:
            change = include_again((entry.key,))
            doing, done = f"including {entry.key} again", f"included {entry.key} again"
            self.post_message(self.ChangeAsked(change, doing, done))
        elif entry.kind == Kind.OMITTED:
            self._bring_back(entry)

    def _bring_back(self, entry: Entry) -> None:
        if not entry.reason.startswith(SkipReason.IGNORED.value):
            self.notify(f"{entry.key} cannot be packed: {entry.reason}", severity="warning")
            return
        patterns = matching_patterns(entry.path, self.excluded)
        if not patterns:
            self.notify(
                f"{entry.key} is left out by a .repoctxignore file or --include; "
                "edit that file or pattern to bring it back",
                severity="warning",
            )
            return
        change = include_again(patterns)
        named = ", ".join(patterns)
        self.post_message(
            self.ChangeAsked(change, f"including {named} again", f"included {named} again")
        )


def matching_patterns(path: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The exclude patterns (gitignore style, root-relative) that match ``path``."""
    import pathspec

    return tuple(p for p in patterns if pathspec.GitIgnoreSpec.from_lines([p]).match_file(path))


def _neighbours(what: str, keys: list[str]) -> str:
    if not keys:
        return f"{what}: none"
    shown = ", ".join(keys[:NEIGHBOURS_SHOWN])
    more = f" and {len(keys) - NEIGHBOURS_SHOWN} more" if len(keys) > NEIGHBOURS_SHOWN else ""
    return f"{what} ({len(keys)}): {shown}{more}"
