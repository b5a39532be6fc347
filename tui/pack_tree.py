"""The pack as a tree: each repository's folders and files in pack order (a folder comes where
its first file is packed), with token counts; files reduced to signatures are marked, and the
files left out are listed with their reasons; the exclude patterns close the tree.

``x`` leaves the highlighted file or folder out of the pack, or brings back what an exclude
pattern left out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from repoctx.pack.fit import Omission, Segment
from repoctx.pack.pipeline import PackResult

EXPAND_ALL_UP_TO = 300  # files; bigger packs open only their repositories


class Kind(StrEnum):
    ROOT = "root"
    FOLDER = "folder"
    FILE = "file"
    OMITTED_GROUP = "omitted-group"
    OMITTED = "omitted"
    PATTERN_GROUP = "pattern-group"
    PATTERN = "pattern"


@dataclass(frozen=True)
class Entry:
    """What a node stands for: ``key`` is ``root/path`` (a root's name for roots, the pattern
    for patterns)."""

    kind: Kind
    key: str
    tokens: int = 0
    reason: str = ""
    segment: Segment | None = None

    @property
    def path(self) -> str:
        """The path inside its repository."""
        return self.key.partition("/")[2]


class PackTree(Tree[Entry]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "toggle_exclusion", "Exclude/include"),
    ]

    class ExclusionToggled(Message):
        """The user asked to leave ``entry`` out, or to bring it back."""

        def __init__(self, entry: Entry) -> None:
            super().__init__()
            self.entry = entry

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("pack", id=id)
        self.show_root = False
        self.guide_depth = 2

    def action_toggle_exclusion(self) -> None:
        node = self.cursor_node
        if node is not None and node.data is not None:
            self.post_message(self.ExclusionToggled(node.data))

    def show(self, result: PackResult, excluded: tuple[str, ...]) -> None:
        """Rebuild from ``result``, keeping the cursor on the same entry when it is still
        there."""
        kept = self.cursor_node.data if self.cursor_node is not None else None
        self.clear()
        expand = len(result.pack.segments) <= EXPAND_ALL_UP_TO
        _fill(self.root, result, excluded, expand)
        self.root.expand()
        target = _find(self.root, kept) if kept is not None else None
        self.call_after_refresh(self._restore_cursor, target)

    def _restore_cursor(self, node: TreeNode[Entry] | None) -> None:
        if node is not None:
            self.move_cursor(node)
        elif self.cursor_line < 0:
            self.cursor_line = 0


def _fill(
    top: TreeNode[Entry], result: PackResult, excluded: tuple[str, ...], expand: bool
) -> None:
    pack = result.pack
    reduced = {o.key: o.reason for o in pack.reduced}
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for segment in pack.segments:
        for folder in _folders(segment.file.key):
            totals[folder] += segment.tokens
            counts[folder] += 1
    nodes: dict[str, TreeNode[Entry]] = {}
    for root in result.snapshot.roots:
        files = counts[root.name]
        label = _label(root.name, f"{totals[root.name]:,} tokens · {files:,} file{_s(files)}")
        nodes[root.name] = top.add(
            label, Entry(Kind.ROOT, root.name, totals[root.name]), expand=True
        )
    for segment in pack.segments:
        key = segment.file.key
        parent = _folder_node(nodes, key, totals, expand)
        name = key.rpartition("/")[2]
        mark = " · signatures" if key in reduced else ""
        entry = Entry(Kind.FILE, key, segment.tokens, reduced.get(key, ""), segment)
        parent.add_leaf(_label(name, f"{segment.tokens:,}{mark}"), entry)
    _add_omitted(nodes, pack.omitted)
    if excluded:
        group = top.add(
            _label("excluded by pattern", f"{len(excluded)}"),
            Entry(Kind.PATTERN_GROUP, ""),
            expand=True,
        )
        for pattern in excluded:
            group.add_leaf(Text(pattern), Entry(Kind.PATTERN, pattern))


def _folders(key: str) -> list[str]:
    """``a/b/c.py`` -> ``["a", "a/b"]``: the root and every folder above the file."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _folder_node(
    nodes: dict[str, TreeNode[Entry]], key: str, totals: dict[str, int], expand: bool
) -> TreeNode[Entry]:
    folders = _folders(key)
    node = nodes[folders[0]]
    for folder in folders[1:]:
        if folder not in nodes:
            name = folder.rpartition("/")[2] + "/"
            entry = Entry(Kind.FOLDER, folder, totals[folder])
            nodes[folder] = node.add(_label(name, f"{totals[folder]:,}"), entry, expand=expand)
        node = nodes[folder]
    return node


def _add_omitted(nodes: dict[str, TreeNode[Entry]], omitted: Sequence[Omission]) -> None:
    by_root: dict[str, list[Entry]] = defaultdict(list)
    for omission in omitted:
        entry = Entry(Kind.OMITTED, omission.key, omission.tokens or 0, omission.reason)
        by_root[omission.key.partition("/")[0]].append(entry)
    for root, entries in by_root.items():
        if root not in nodes:
            continue
        group = nodes[root].add(
            _label("not packed", f"{len(entries):,}"), Entry(Kind.OMITTED_GROUP, root)
        )
        for entry in entries:
            label = Text(entry.path)
            label.append(f"  {entry.reason}", style="dim italic")
            group.add_leaf(label, entry)


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _label(name: str, detail: str) -> Text:
    label = Text(name)
    label.append(f"  {detail}", style="dim")
    return label


def _find(node: TreeNode[Entry], wanted: Entry) -> TreeNode[Entry] | None:
    """The node for the same kind and key as ``wanted``, or for its nearest folder."""
    best: TreeNode[Entry] | None = None
    best_length = -1
    stack = [node]
    while stack:
        current = stack.pop()
        data = current.data
        if data is not None:
            if (data.kind, data.key) == (wanted.kind, wanted.key):
                return current
            prefix = data.key + "/"
            folder = data.kind in (Kind.ROOT, Kind.FOLDER)
            if folder and wanted.key.startswith(prefix) and len(prefix) > best_length:
                best, best_length = current, len(prefix)
        stack.extend(current.children)
    return best
