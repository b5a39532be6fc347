"""Running the slash commands typed in the input or chosen in the palette."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from textual.message import Message
from textual.notifications import SeverityLevel

from repoctx.errors import UsageError
from repoctx.paths import user_path
from repoctx.session import Session
from tui.commands import parse
from tui.controller import SessionController, add_root, drop, exclude, include_again, switch_model
from tui.transcript import transcript


class ChatApp(Protocol):
    """What the commands need of the app (``tui.app.RepoctxApp``), which imports this module."""

    session: Session
    jobs: SessionController

    def notify(self, message: str, *, severity: SeverityLevel = "information") -> None: ...
    def change(self, change: Callable[[Session], None], doing: str, done: str) -> None: ...
    def run_job(self, name: str, job: Callable[[], Message]) -> object: ...
    def exit(self) -> None: ...
    def action_rescan(self) -> None: ...
    def action_new_conversation(self) -> None: ...
    def action_history(self) -> None: ...
    def action_toggle_watch(self) -> None: ...
    def action_copy_code(self) -> None: ...
    def action_toggle_context(self) -> None: ...
    def action_help(self) -> None: ...


class CommandRunner:
    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.handlers: dict[str, Callable[[str], None]] = {
            "add": self.add,
            "drop": self.drop,
            "rescan": lambda _: app.action_rescan(),
            "model": self.model,
            "clear": lambda _: app.action_new_conversation(),
            "save": self.save,
            "exclude": self.exclude,
            "include": self.include,
            "history": lambda _: app.action_history(),
            "watch": lambda _: app.action_toggle_watch(),
            "copy": lambda _: app.action_copy_code(),
            "context": lambda _: app.action_toggle_context(),
            "help": lambda _: app.action_help(),
            "quit": lambda _: app.exit(),
        }

    def run(self, text: str) -> None:
        try:
            spec, argument = parse(text)
        except UsageError as error:
            self.app.notify(str(error), severity="error")
            return
        self.handlers[spec.name](argument)

    def add(self, path: str) -> None:
        self.app.change(add_root(Path(path)), f"adding {path}", f"added {path}")

    def drop(self, target: str) -> None:
        self.app.change(drop(target), f"dropping {target}", f"dropped {target}")

    def model(self, path: str) -> None:
        name = Path(path).name
        self.app.change(switch_model(path), f"switching to {name}", f"switched to {name}")

    def exclude(self, pattern: str) -> None:
        self.app.change(exclude(pattern), f"leaving out {pattern}", f"left out {pattern}")

    def include(self, pattern: str) -> None:
        change = include_again((pattern,))
        self.app.change(change, f"including {pattern} again", f"included {pattern} again")

    def save(self, path: str) -> None:
        session = self.app.session
        conversation = session.conversation
        if conversation is None or not conversation.messages:
            self.app.notify("there is nothing to save yet: ask a question first")
            return
        model = session.result.model.path.name if session.result else conversation.model
        names = [root.name for root in session.roots]
        text = transcript(conversation.title, names, model, conversation.exchanges())
        target = user_path(path)
        self.app.run_job("save", partial(self.app.jobs.save_transcript, target, text))

    def completions(self, kind: str) -> list[str]:
        """What may follow a command: paths in the pack (root-relative, folders first where
        they appear), repository names, or the exclude patterns."""
        session = self.app.session
        if kind == "excluded":
            return list(session.settings.exclude)
        found = [root.name for root in session.roots] if kind == "packed" else []
        result = session.result
        if result is not None:
            for segment in result.pack.segments:
                parts = segment.file.path.split("/")
                found += ["/".join(parts[: i + 1]) + "/" for i in range(len(parts) - 1)]
                found.append(segment.file.path)
        return list(dict.fromkeys(found))
