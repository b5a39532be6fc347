"""`repoctx chat`: the terminal UI. The app drives a ready-built ``Session`` (see
``tui.factory``); everything that blocks runs in thread workers, one job at a time, and comes
back as messages. Unless turned off (``--no-watch``, ``REPOCTX_WATCH=0``, ``/watch``), a thread
watches the files: when saves settle, the pack is built again and prefilled in the background
from the first file that changed (Escape stops that)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Input

from repoctx.errors import RepoctxError
from repoctx.events import AnswerDone, Notice, TailAdded, Token
from repoctx.session import Session
from tui.commands import ChatCommands
from tui.context_pane import ContextPane
from tui.controller import SessionController
from tui.conversation import AnswerView, ConversationView
from tui.dispatch import CommandRunner
from tui.factory import build_session
from tui.help_screen import HelpScreen
from tui.messages import (
    AnswerFinished,
    ConversationLoaded,
    CoreEvent,
    FilesChanged,
    HistoryListed,
    JobDone,
    JobFailed,
    PackReady,
    Refreshed,
    ResumeOffer,
    Usage,
)
from tui.picker_screen import PickerScreen
from tui.prompt_input import PromptInput
from tui.resume_screen import ResumeScreen
from tui.status_line import StatusLine, refreshed_state
from tui.watch import PackPaths, Watcher, WatchTimes, watch_wanted

Job = Callable[[], Message]


class RepoctxApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "repoctx chat"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012
    COMMANDS = App.COMMANDS | {ChatCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop answer or prefill"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+b", "toggle_context", "Context"),
        Binding("ctrl+y", "copy_code", "Copy code"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+r", "rescan", "Rescan"),
        Binding("ctrl+o", "history", "History", show=False),
    ]

    answering: reactive[bool] = reactive(False, bindings=True)
    refreshing: reactive[bool] = reactive(False, bindings=True)

    def __init__(
        self, session: Session, *, offer_resume: bool = True, watch: WatchTimes | None = None
    ) -> None:
        super().__init__()
        self.session = session
        self.jobs = SessionController(session, self.post_message)
        self.offer_resume = offer_resume
        self._cancel = threading.Event()
        self._warm_cancel = threading.Event()
        self._refreshes: list[threading.Event] = []  # cancel events of pending refreshes
        self._changed_again = False  # files changed while a refresh was pending
        self._answer: AnswerView | None = None
        self.commands = CommandRunner(self)
        paths = PackPaths(lambda: session.result, lambda: self.jobs.scanned_ns)
        self.watcher = Watcher(paths, self._files_changed, watch or WatchTimes())
        self.watching = watch is not None

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ConversationView(id="conversation")
            yield ContextPane(id="context")
        yield PromptInput(self.commands.completions, id="prompt")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        names = ", ".join(root.name for root in self.session.roots)
        self.query_one(ConversationView).set_welcome(f"Packing {names}…")
        self.query_one(PromptInput).focus()
        self.run_job("pack", self.jobs.pack)
        if self.offer_resume:
            self.run_job("offer", self.jobs.offer)
        if self.watching:
            self.watcher.start()

    # -- jobs ---------------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="session")
    def run_job(self, name: str, job: Job) -> None:
        """Run ``job`` on the session's thread, after the jobs before it, without blocking the
        UI; post what it returns, or what went wrong."""
        self.jobs.call(partial(self._job, name, job))

    def _job(self, name: str, job: Job) -> None:
        try:
            message: Message = job()
        except (RepoctxError, OSError) as error:
            message = JobFailed(name, str(error))
        except Exception as error:  # a bug must not take the conversation down
            self.log.error(f"job {name} failed", error)
            message = JobFailed(name, f"unexpected error: {error!r}; please report it")
        self.post_message(message)  # from the session's thread: messages keep the jobs' order

    def change(self, change: Callable[[Session], None], doing: str, done: str) -> None:
        """Change the session, pack again and prefill, on a worker."""
        self.query_one(StatusLine).set_state(doing)
        cancel = self._refresh_started()
        self.run_job("change", partial(self.jobs.change, change, done, cancel))

    def on_context_pane_change_asked(self, message: ContextPane.ChangeAsked) -> None:
        self.change(message.change, message.doing, message.done)

    # -- refreshing the pack ------------------------------------------------------------------

    def refresh_pack(self, doing: str) -> None:
        """Read the files again, pack and prefill, on a worker."""
        if not self.answering:
            self.query_one(StatusLine).set_state(doing)
        self.run_job("refresh", partial(self.jobs.refresh, self._refresh_started()))

    def _refresh_started(self) -> threading.Event:
        cancel = threading.Event()
        self._refreshes.append(cancel)
        self.refreshing = True
        return cancel

    def _refresh_ended(self, cancel: threading.Event | None) -> None:
        """``cancel``'s refresh is over; None: the oldest (they run in order), which failed."""
        if cancel in self._refreshes:
            self._refreshes.remove(cancel)
        elif cancel is None and self._refreshes:
            self._refreshes.pop(0)
        self.refreshing = bool(self._refreshes)

    def _files_changed(self, paths: list[Path]) -> None:
        """From the watcher's thread."""
        self.post_message(FilesChanged(paths))

    def on_files_changed(self, message: FilesChanged) -> None:
        if self._refreshes:  # the refresh pending reads them, or the one running might not
            self._changed_again = True
            return
        count = len(message.paths)
        self.refresh_pack(f"{count} change{'' if count == 1 else 's'} on disk; reading the files")

    def on_refreshed(self, message: Refreshed) -> None:
        self._refresh_ended(message.cancel)
        if not self.answering:
            self.query_one(StatusLine).set_state(refreshed_state(message))
        self._refresh_if_changed_again()

    def _refresh_if_changed_again(self) -> None:
        if self._changed_again and not self._refreshes:
            self._changed_again = False
            self.refresh_pack("more changes on disk; reading the files")

    def action_toggle_watch(self) -> None:
        self.watching = not self.watching
        if self.watching:
            self.watcher.start()
            self.notify("watching the files: the pack is refreshed when they are saved")
        else:
            self.watcher.stop()
            self.notify("not watching the files: /rescan (Ctrl+R) reads them again")

    # -- questions ----------------------------------------------------------------------------

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        prompt = self.query_one(PromptInput)
        if not text.startswith("/") and self.answering:
            self.notify("an answer is being written: wait for it, or press Escape to stop it")
            return
        prompt.remember(text)
        prompt.value = ""
        if text.startswith("/"):
            self.run_command(text)
        else:
            await self.ask(text)

    async def ask(self, question: str) -> None:
        self._cancel = threading.Event()
        self.answering = True
        self._answer = await self.query_one(ConversationView).ask(question)
        status = self.query_one(StatusLine)
        status.activity.asking()
        status.show()
        self.run_job("ask", partial(self.jobs.ask, question, self._cancel))

    def action_stop(self) -> None:
        if self.answering:
            self._cancel.set()
            self.query_one(StatusLine).set_state("stopping…")
        elif self._refreshes:
            for cancel in self._refreshes:
                cancel.set()
            self.query_one(StatusLine).set_state("stopping the prefill…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.answering or self.refreshing
        return True

    # -- what the jobs send back --------------------------------------------------------------

    async def on_core_event(self, message: CoreEvent) -> None:
        event = message.event
        if isinstance(event, Token):
            if self._answer is not None:
                await self._answer.append(event.text)
            self.query_one(StatusLine).apply(event, message.at)
        elif isinstance(event, Notice):
            warning = event.level == "warning"
            self.notify(event.message, severity="warning" if warning else "information", timeout=8)
        elif isinstance(event, TailAdded):
            await self.query_one(ConversationView).added(event.files)
        else:
            self.query_one(StatusLine).apply(event, message.at)

    def on_pack_ready(self, message: PackReady) -> None:
        if message.notice:
            self.notify(message.notice, title="the pack changed", severity="warning", timeout=12)
        result = message.result
        self.query_one(ContextPane).show_pack(result, message.usage, message.excluded)
        names = ", ".join(root.name for root in result.snapshot.roots)
        pack = result.pack
        self.query_one(ConversationView).set_welcome(
            f"Ask anything about {names}: {len(pack.segments):,} files, {pack.tokens:,} tokens "
            "in the pack.\nType / for commands, F1 for help."
        )
        status = self.query_one(StatusLine)
        if self.session.engine is None:
            status.activity.model = None
        status.set_model_file(result.model.path.name)
        if not self.answering:
            status.set_state("ready")

    async def on_answer_finished(self, message: AnswerFinished) -> None:
        await self._end_answer(message.done)
        self._show_usage(message.usage)

    async def _end_answer(self, done: AnswerDone | None, failure: str = "") -> None:
        if self._answer is not None:
            await self._answer.finish(done, failure)
            self._answer = None
        self.answering = False
        status = self.query_one(StatusLine)
        status.activity.finished()
        status.show()

    def _show_usage(self, usage: Usage | None) -> None:
        if usage is not None:
            self.query_one(ContextPane).show_usage(usage)

    async def on_conversation_loaded(self, message: ConversationLoaded) -> None:
        await self.query_one(ConversationView).show(message.conversation.exchanges())
        self._show_usage(message.usage)
        if message.note:
            self.notify(message.note, timeout=8)

    def on_resume_offer(self, message: ResumeOffer) -> None:
        def chosen(conversation_id: str | None) -> None:
            if conversation_id is not None:
                self.run_job("resume", partial(self.jobs.resume, conversation_id))
            # the pack (and a resumed conversation) comes into the model's context now, while
            # the user types, not at the first question
            self.warm()

        self.push_screen(ResumeScreen(message.conversations), chosen)

    def on_history_listed(self, message: HistoryListed) -> None:
        if not message.conversations:
            self.notify("no conversations about these repositories yet")
            return
        current = self.session.conversation.id if self.session.conversation else None

        def chosen(conversation_id: str | None) -> None:
            if conversation_id is not None and conversation_id != current:
                self.run_job("resume", partial(self.jobs.resume, conversation_id))
                self.warm()

        screen = ResumeScreen(message.conversations, offer=False, current=current)
        self.push_screen(screen, chosen)

    def on_resume_screen_delete_asked(self, message: ResumeScreen.DeleteAsked) -> None:
        conversation = message.conversation
        self.run_job("delete", partial(self.jobs.delete, conversation.id, conversation.title))

    def warm(self) -> None:
        self.run_job("warm", partial(self.jobs.warm, self._warm_cancel))

    def on_job_done(self, message: JobDone) -> None:
        if message.note:
            self.notify(message.note)
        if message.job == "offer":  # nothing to resume: get the pack ready for a first question
            self.warm()
        elif message.job == "warm" and not self.answering:
            status = self.query_one(StatusLine)
            status.activity.finished()
            status.show()

    async def on_job_failed(self, message: JobFailed) -> None:
        self.notify(message.text, title="repoctx", severity="error", timeout=12)
        if message.job in ("change", "refresh"):
            self._refresh_ended(None)
            self._refresh_if_changed_again()
        if message.job == "ask":
            await self._end_answer(None, f"no answer: {message.text}")
        elif not self.answering:
            self.query_one(StatusLine).set_state("ready" if self.session.result else "no pack")
        if self.session.result is None and message.job in ("pack", "change", "refresh"):
            self.query_one(ConversationView).set_welcome(
                f"Nothing is packed: {message.text}\n"
                "Fix that, then /rescan (or /model PATH, /add PATH)."
            )

    # -- keys ---------------------------------------------------------------------------------

    def action_help(self) -> None:
        keys = [
            (self.get_key_display(binding), binding.description)
            for binding in self._bindings_table()
        ]
        self.push_screen(HelpScreen(keys))

    def _bindings_table(self) -> list[Binding]:
        return [b for b in self.BINDINGS if isinstance(b, Binding)] + [
            Binding("ctrl+p", "command_palette", "Command palette"),
            Binding("ctrl+q", "quit", "Quit"),
        ]

    def action_toggle_context(self) -> None:
        self.screen.toggle_class("-context-toggled")
        self.call_after_refresh(self._focus_after_toggle)

    def _focus_after_toggle(self) -> None:
        context = self.query_one(ContextPane)
        if context.display and not self.query_one(ConversationView).display:
            self.query_one("#pack-tree").focus()
        elif not context.display and (self.focused is None or context in self.focused.ancestors):
            self.query_one(PromptInput).focus()

    def action_copy_code(self) -> None:
        blocks = self.query_one(ConversationView).code_blocks()
        if not blocks:
            self.notify("there is no code block in the answers yet")
            return
        if len(blocks) == 1:
            self._copy(blocks[0].code)
            return
        lines = [f"{i}. {b.language or 'text'} · {b.preview}" for i, b in enumerate(blocks, 1)]

        def chosen(index: int | None) -> None:
            if index is not None:
                self._copy(blocks[index].code)

        self.push_screen(PickerScreen("Copy a code block", lines, start=len(blocks) - 1), chosen)

    def _copy(self, code: str) -> None:
        self.copy_to_clipboard(code)
        lines = code.count("\n") + (0 if code.endswith("\n") else 1)
        self.notify(f"copied {lines} line{'s' if lines != 1 else ''} to the clipboard", timeout=3)

    def action_new_conversation(self) -> None:
        self.run_job("clear", self.jobs.new_conversation)

    def action_rescan(self) -> None:
        self.refresh_pack("reading the files again")

    def action_history(self) -> None:
        self.run_job("history", self.jobs.history)

    def run_command(self, text: str) -> None:
        self.commands.run(text)

    def prefill_command(self, text: str) -> None:
        prompt = self.query_one(PromptInput)
        prompt.value = text
        prompt.cursor_position = len(text)
        prompt.focus()

    def on_unmount(self) -> None:
        self.watcher.stop()
        self._cancel.set()
        self._warm_cancel.set()
        for cancel in self._refreshes:
            cancel.set()


def run_chat(paths: tuple[Path, ...], flags: dict[str, Any]) -> None:
    """`repoctx chat PATHS...`: the session from the command's flags, in the app."""
    flags = dict(flags)
    watch = WatchTimes() if watch_wanted(flags) else None
    session = build_session(paths, flags)
    app = RepoctxApp(session, watch=watch)
    try:
        app.run()
    finally:
        app.jobs.close()  # after the job still running, if any, has finished or stopped
