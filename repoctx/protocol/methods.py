"""The methods that use the session: ``context/open``, ``context/refresh`` and ``ask``. Their
parameters are checked on the reader thread (``parse_*``); the work runs on the one worker
thread that owns the session (the model, the pack and the SQLite cache live there)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repoctx.config import Settings, load_settings
from repoctx.conversations import ConversationStore
from repoctx.events import (
    CacheOutcome,
    Event,
    EventSink,
    ModelReady,
    Notice,
    Progress,
    TailAdded,
    Token,
)
from repoctx.pack.pipeline import PackResult
from repoctx.paths import user_path
from repoctx.protocol.params import EditorContext, Params, compose_question
from repoctx.protocol.rpc import (
    CONTEXT_NOT_OPEN,
    INVALID_PARAMS,
    JsonObject,
    RequestId,
    RpcError,
    notification,
)
from repoctx.session import Session, open_session

Send = Callable[[JsonObject], None]
SessionFactory = Callable[[Sequence[Path], Settings, ConversationStore], Session]


def default_session(roots: Sequence[Path], settings: Settings, store: ConversationStore) -> Session:
    """Settings' KV type and flash attention reach the engine, as in ask and chat."""
    return open_session(roots, settings, store)


@dataclass(frozen=True)
class OpenArgs:
    roots: list[Path]
    include: list[str]
    exclude: list[str]
    budget: int | None
    prefill: bool = True


@dataclass(frozen=True)
class AskArgs:
    question: str
    conversation_id: str | None
    context: EditorContext | None


def parse_open(params: Params) -> OpenArgs:
    roots = [user_path(r) for r in params.strings("roots", required=True)]
    return OpenArgs(
        roots=roots,
        include=params.strings("include"),
        exclude=params.strings("exclude"),
        budget=params.integer("budget", minimum=1),
        prefill=params.boolean("prefill", default=True),
    )


def parse_ask(params: Params) -> AskArgs:
    question = params.string("question", required=True)
    assert question is not None
    return AskArgs(
        question=question,
        conversation_id=params.string("conversationId", required="conversationId" in params.raw),
        context=EditorContext.from_params(params.nested("context")),
    )


def no_context() -> RpcError:
    return RpcError(CONTEXT_NOT_OPEN, "no context is open; send context/open with the roots first")


def pack_stats(result: PackResult) -> JsonObject:
    pack = result.pack
    return {
        "roots": [str(root.path) for root in result.snapshot.roots],
        "files": len(pack.segments),
        "reduced": len(pack.reduced),
        "omitted": len(pack.omitted),
        "tokens": pack.tokens,
        "budget": pack.budget,
        "model": result.model.path.name,
        "contextLength": result.model.context_length,
    }


def _unchanged_tokens(old: PackResult, new: PackResult) -> int:
    """Tokens at the start of the new pack that the old one had too: the prefix the engine
    keeps; only what follows is evaluated again."""
    if old.pack.header != new.pack.header:
        return 0
    kept = new.pack.header_tokens
    for before, after in zip(old.pack.segments, new.pack.segments, strict=False):
        if before.text != after.text:
            return kept
        kept += after.tokens
    same = old.pack.text == new.pack.text
    return kept + new.pack.footer_tokens if same else kept


def _changed_files(old: PackResult, new: PackResult) -> int:
    before = {f.key: f.blob_id for f in old.snapshot.files}
    after = {f.key: f.blob_id for f in new.snapshot.files}
    return sum(before.get(key) != blob for key, blob in after.items()) + len(before.keys() - after)


@dataclass
class Kept:
    """What a request's result reports of its events: the cache outcomes, the files added."""

    outcomes: list[CacheOutcome]
    tails: list[TailAdded]

    def outcome(self) -> CacheOutcome | None:
        return self.outcomes[-1] if self.outcomes else None

    def tail(self) -> TailAdded | None:
        return self.tails[-1] if self.tails else None


def event_sink(send: Send, request_id: RequestId) -> tuple[EventSink, Kept]:
    """Events of one request as notifications carrying its id; the cache outcome and the
    files added to the question are kept for the result."""
    kept = Kept([], [])

    def sink(event: Event) -> None:
        if isinstance(event, Token):
            send(notification("$/token", {"id": request_id, "text": event.text}))
        elif isinstance(event, Progress):
            fields = {"stage": event.stage, "done": event.done, "total": event.total}
            send(notification("$/progress", {"id": request_id, **fields, "unit": event.unit}))
        elif isinstance(event, Notice):
            fields = {"message": event.message, "level": event.level}
            send(notification("$/notice", {"id": request_id, **fields}))
        elif isinstance(event, ModelReady):
            send(notification("$/model", {"id": request_id, **model_json(event)}))
        elif isinstance(event, TailAdded):
            kept.tails.append(event)
            send(notification("$/tail", {"id": request_id, **tail_json(event)}))
        elif isinstance(event, CacheOutcome):
            kept.outcomes.append(event)

    return sink, kept


def model_json(ready: ModelReady) -> JsonObject:
    return {
        "model": ready.model,
        "nCtx": ready.n_ctx,
        "kvType": ready.kv_type,
        "device": ready.device,
        "flashAttn": ready.flash_attn,
        "gpuLayers": ready.gpu_layers,
    }


def tail_json(tail: TailAdded) -> JsonObject:
    return {
        "files": list(tail.files),
        "named": list(tail.named),
        "reduced": list(tail.reduced),
        "tokens": tail.tokens,
        "budget": tail.budget,
    }


def cache_json(outcome: CacheOutcome | None) -> JsonObject | None:
    if outcome is None:
        return None
    return {
        "source": outcome.source,
        "restoredTokens": outcome.restored_tokens,
        "evaluatedTokens": outcome.evaluated_tokens,
        "restoreS": outcome.restore_s,
    }


class Workspace:
    """The session behind the protocol. Every method but ``roots`` runs on the worker."""

    def __init__(
        self,
        send: Send,
        flags: Mapping[str, Any],
        store: ConversationStore,
        session_factory: SessionFactory = default_session,
    ) -> None:
        self.send = send
        self.flags = flags
        self.store = store
        self.session_factory = session_factory
        self.session: Session | None = None
        self.roots: list[Path] | None = None  # of the last context opened; read by the reader

    def open(self, args: OpenArgs, request_id: RequestId, cancel: threading.Event) -> JsonObject:
        flags = {
            "model": self.flags.get("model"),
            "include": tuple(args.include),
            "exclude": tuple(args.exclude),
            "budget": args.budget,
        }
        settings = load_settings(args.roots, flags)
        session = self.session
        if session is not None and session.settings.model == settings.model:
            session.set_roots(args.roots)
            session.settings = settings  # same model: the engine and its KV state stay warm
        else:
            self.close()
            session = self.session_factory(args.roots, settings, self.store)
        self.session = session
        self.roots = None
        sink, _ = event_sink(self.send, request_id)
        result = session.pack(sink)
        self.roots = list(session.roots)
        stats = pack_stats(result)
        if args.prefill:
            stats["cache"] = cache_json(session.warm(sink, cancel))
        return stats

    def refresh(self, request_id: RequestId, prefill: bool, cancel: threading.Event) -> JsonObject:
        session = self._session()
        old = session.result
        sink, _ = event_sink(self.send, request_id)
        new = session.pack(sink)
        stats = pack_stats(new)
        stats["changed"] = _changed_files(old, new) if old else len(new.snapshot.files)
        stats["unchangedTokens"] = _unchanged_tokens(old, new) if old else 0
        if prefill:
            stats["cache"] = cache_json(session.warm(sink, cancel))
        return stats

    def ask(self, args: AskArgs, request_id: RequestId, cancel: threading.Event) -> JsonObject:
        session = self._session()
        if args.conversation_id is None:
            session.new_conversation()
        elif session.resume(args.conversation_id) is None:
            raise RpcError(
                INVALID_PARAMS,
                f"ask: parameter 'conversationId': no conversation {args.conversation_id!r} "
                "about the open roots; conversation/list shows them",
                {"parameter": "conversationId"},
            )
        question = compose_question(args.question, args.context, session.roots)
        sink, kept = event_sink(self.send, request_id)
        done = session.ask(question, sink, cancel)
        tail = kept.tail()
        assert session.conversation is not None
        return {
            "text": done.text,
            "stopReason": done.stop_reason,
            "conversationId": session.conversation.id,
            "promptTokens": done.prompt_tokens,
            "generatedTokens": done.generated_tokens,
            "firstTokenS": done.first_token_s,
            "totalS": done.total_s,
            "cache": cache_json(kept.outcome()),
            "tail": tail_json(tail) if tail is not None else None,
            "model": model_json(session.engine.ready) if session.engine else None,
        }

    def _session(self) -> Session:
        if self.session is None or self.roots is None:
            raise no_context()
        return self.session

    def close(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()
