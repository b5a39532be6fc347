"""Named GGUF models and their verified, resumable download (``repoctx models list|pull|path``).

A model lives at ``data_dir()/models/<org>/<repo>/<file>``. While it downloads, the bytes go to
``.<file>.<key>.incomplete`` beside it, which survives an interruption (Ctrl-C, a kill, a dropped
connection) so the next pull continues with a Range request. At the end the file is checked
against the expected size and sha256 (the registry's, else the hub's LFS metadata) and
``<file>.verified`` records size, mtime and hash, so a later pull returns without rehashing.

huggingface_hub supplies the metadata request (HEAD on ``/resolve``, honouring HF_ENDPOINT) and
the streaming ``http_get``; ``hf_hub_download`` is not used because 2.x downloads into a
per-process temporary file that it deletes on failure, which rules out resuming across runs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repoctx import paths
from repoctx.errors import DownloadError, ModelError
from repoctx.events import EventSink, Notice, Progress, ignore_events
from repoctx.model.choice import EMBEDDED_ABOUT, EMBEDDED_NAME, default_model_path

DEFAULT_ENDPOINT = "https://huggingface.co"
_HASH_BLOCK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_FILE = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._+-]*/)*[A-Za-z0-9_][A-Za-z0-9._+-]*\.gguf", re.I)
_SPEC_HELP = "write it as ORG/REPO:FILE.gguf"


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF file in a hub repository; ``sha256``/``size`` None: trust the hub's metadata."""

    repo_id: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None
    name: str | None = None
    description: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.repo_id}:{self.filename}"


@dataclass(frozen=True)
class ModelEntry:
    """A row of ``repoctx models list``: ``size`` is on disk when present, else expected."""

    name: str
    description: str
    path: Path | None
    size: int | None
    present: bool
    verified: bool
    repo_id: str | None = None
    filename: str | None = None
    embedded: bool = False


REGISTRY: dict[str, ModelSpec] = {
    # sha256 as the hub lists it for this file at the pinned commit (4.92 GB); the exact size
    # comes from the hub's X-Linked-Size at download time.
    "llama-3-8b-instruct-gradient-1048k": ModelSpec(
        name="llama-3-8b-instruct-gradient-1048k",
        description="Gradient's Llama 3 8B Instruct with a 1M-token context, Q4_K_M (4.9 GB)",
        repo_id="crusoeai/Llama-3-8B-Instruct-Gradient-1048k-GGUF",
        filename="llama-3-8b-instruct-gradient-1048k.Q4_K_M.gguf",
        revision="1e86df55a9bf8f7345dc3d6fb6a3c977061df28e",
        sha256="bd7bb8f4d020835dd4a0c927bd147224b6fa5eaa7bf36d0969c401c0319abf30",
    ),
}


def named_models() -> list[str]:
    """The short names of models: the embedded one and the registry's. ``repoctx models list``
    shows these and ``ORG/REPO:FILE.gguf`` for the other downloaded files."""
    return [EMBEDDED_NAME, *REGISTRY]


def is_model_name(text: str) -> bool:
    """Whether ``text`` names a model as ``repoctx models list`` does (downloaded or not)."""
    try:
        return text.strip() == EMBEDDED_NAME or bool(parse_spec(text))
    except ModelError:
        return False


def parse_spec(spec: str) -> ModelSpec:
    """A registry name, or ``ORG/REPO:FILE.gguf``; anything else raises ModelError."""
    text = spec.strip()
    if text in REGISTRY:
        return REGISTRY[text]
    repo_id, colon, filename = text.partition(":")
    if not colon:
        names = ", ".join(named_models())
        raise ModelError(f"{text!r} is not a known model; pass one of {names}, or {_SPEC_HELP}")
    org, slash, repo = repo_id.partition("/")
    if not (slash and _valid_name(org) and _valid_name(repo)):
        raise ModelError(f"{text!r}: {repo_id!r} is not a hub repository id; {_SPEC_HELP}")
    if not _FILE.fullmatch(filename):
        raise ModelError(f"{text!r}: {filename!r} is not a .gguf file name; {_SPEC_HELP}")
    return ModelSpec(repo_id=repo_id, filename=filename)


def _valid_name(part: str) -> bool:
    return bool(_NAME_PART.fullmatch(part)) and ".." not in part and "--" not in part


def models_dir() -> Path:
    return paths.data_dir() / "models"


def local_path(model: ModelSpec) -> Path:
    return models_dir().joinpath(*model.repo_id.split("/"), *model.filename.split("/"))


def model_path(name: str) -> Path:
    """Where the model NAME (registry name or ORG/REPO:FILE.gguf) is on disk."""
    if name.strip() == EMBEDDED_NAME:
        return default_model_path()
    model = parse_spec(name)
    path = local_path(model)
    if not path.is_file():
        raise ModelError(
            f"{model.label} is not downloaded; run `repoctx models pull {model.label}`"
        )
    return path


def list_models() -> list[ModelEntry]:
    """The embedded model, the registry, then any other downloaded GGUF file."""
    try:
        embedded: Path | None = default_model_path()
    except ModelError:
        embedded = None
    size = embedded.stat().st_size if embedded else None
    here = embedded is not None
    entries = [ModelEntry(EMBEDDED_NAME, EMBEDDED_ABOUT, embedded, size, here, here, embedded=True)]
    entries += [_entry(m, m.description, local_path(m), m) for m in REGISTRY.values()]
    known = {entry.path for entry in entries}
    root = models_dir()
    for path in sorted(root.rglob("*.gguf")) if root.is_dir() else []:
        parts = path.relative_to(root).parts
        if path not in known and len(parts) >= 3 and not path.name.startswith("."):
            model = ModelSpec("/".join(parts[:2]), "/".join(parts[2:]))
            entries.append(_entry(model, "", path, None))
    return entries


def _entry(model: ModelSpec, about: str, path: Path, pins: ModelSpec | None) -> ModelEntry:
    """``pins``: the registry entry whose revision and sha256 the marker must match."""
    present = path.is_file()
    size = path.stat().st_size if present else model.size
    verified = present and _marker_matches(path, pins)
    return ModelEntry(
        model.label, about, path, size, present, verified, model.repo_id, model.filename
    )


def pull(spec: str, on_event: EventSink = ignore_events, revision: str | None = None) -> Path:
    """Download SPEC (see ``parse_spec``) unless it is already here and verified; return its
    path. ``revision`` (branch, tag or commit) overrides the registry's pinned one."""
    if spec.strip() == EMBEDDED_NAME:
        path = default_model_path()
        on_event(Notice(f"{EMBEDDED_NAME} ships with repoctx; nothing to download", "info"))
        return path
    model = parse_spec(spec)
    if revision is not None and revision != model.revision:
        model = replace(model, revision=revision, sha256=None, size=None)
    dest = local_path(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    try:
        with FileLock(f"{dest}.lock", timeout=1), _hub_logs_as_notices(on_event):
            return _pull_locked(model, dest, on_event)
    except Timeout as error:
        raise DownloadError(
            f"another repoctx process is downloading {model.label}; wait for it to finish, "
            "then run pull again"
        ) from error


@contextmanager
def _hub_logs_as_notices(on_event: EventSink) -> Iterator[None]:
    """huggingface_hub logs retries to stderr through its own handler: send them as Notices."""
    logger = logging.getLogger("huggingface_hub")

    class _Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            on_event(Notice(record.getMessage().splitlines()[0]))

    saved, logger.handlers = logger.handlers, [_Forward(logging.WARNING)]
    try:
        yield
    finally:
        logger.handlers = saved


@dataclass(frozen=True)
class _Remote:
    url: str
    size: int | None
    sha256: str | None
    commit: str


def _pull_locked(model: ModelSpec, dest: Path, on_event: EventSink) -> Path:
    if _marker_matches(dest, model):
        return dest
    if dest.is_file() and model.sha256 and _adopt(dest, model, on_event):
        return dest
    remote = _remote_file(model)
    checked = _expected(model, remote)
    if dest.is_file() and not model.sha256 and _adopt(dest, checked, on_event):
        return dest
    if checked.sha256 is None:
        on_event(Notice(f"the hub gives no sha256 for {model.label}; checking its size only"))
    key = (checked.sha256 or remote.commit)[:16]
    partial = dest.with_name(f".{dest.name}.{key}.incomplete")
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.incomplete"):
        if stale != partial:
            stale.unlink(missing_ok=True)
    _download(checked, remote, partial, on_event)
    digest = _verify(partial, checked, on_event)
    os.replace(partial, dest)
    _write_marker(dest, digest, model.revision)
    return dest


def _adopt(dest: Path, model: ModelSpec, on_event: EventSink) -> bool:
    """Keep a file already at ``dest`` if it matches ``model``; otherwise remove it."""
    size_ok = model.size is None or dest.stat().st_size == model.size
    digest = _sha256(dest, on_event) if size_ok else ""
    if size_ok and (model.sha256 is None or digest == model.sha256):
        _write_marker(dest, digest, model.revision)
        return True
    on_event(Notice(f"{dest} does not match {model.label}; downloading it again"))
    dest.unlink()
    return False


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _remote_file(model: ModelSpec) -> _Remote:
    """Size, sha256, commit and location of the file, from a HEAD on ``/resolve``."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = _endpoint()
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise DownloadError(_HUB_ERRORS["OfflineModeIsEnabled"].format(m=model) + _OR_LOCAL)
    url = hf_hub_url(model.repo_id, model.filename, revision=model.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except (httpx2.HTTPError, OSError) as error:
        raise _hub_error(error, model, endpoint) from error
    if not meta.commit_hash or not meta.etag:
        raise DownloadError(
            f"{endpoint} does not answer like a Hugging Face Hub (no X-Repo-Commit or ETag "
            f"for {model.label}); check HF_ENDPOINT, or pass --model PATH"
        )
    etag = meta.etag.lower()
    sha256 = etag if _SHA256.fullmatch(etag) else None
    return _Remote(meta.location, meta.size, sha256, meta.commit_hash)


_OR_LOCAL = "or pass --model PATH to use a GGUF file you already have"
_HUB_ERRORS = {  # huggingface_hub.errors class: message; subclasses before their bases
    "OfflineModeIsEnabled": "HF_HUB_OFFLINE is set: unset it to download {m.label}, ",
    "GatedRepoError": "{m.repo_id} is gated: accept its terms at {where} and run "
    "`hf auth login` (or set HF_TOKEN), then pull again; ",
    "RepositoryNotFoundError": "{where}: no such repository, or a private one (run "
    "`hf auth login`); check the name, ",
    "RevisionNotFoundError": "{m.repo_id} has no revision {m.revision!r}; check --revision, ",
    "RemoteEntryNotFoundError": "{m.repo_id} has no file {m.filename} at revision "
    "{m.revision}; see {where}/tree/{m.revision}, ",
    "HfHubHTTPError": "the model hub answered {error}; try again later, ",
}


def _hub_error(error: Exception, model: ModelSpec, endpoint: str) -> DownloadError:
    """A DownloadError that says what to do about ``error`` from the hub's HEAD request."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(error, httpx2.TransportError):
        return DownloadError(
            f"cannot reach the model hub at {endpoint} ({type(error).__name__}: {error}); "
            f"check the network connection, set HF_ENDPOINT to a reachable mirror, {_OR_LOCAL}"
        )
    for name, message in _HUB_ERRORS.items():
        if isinstance(error, getattr(errors, name)):
            first = (str(error).strip() or name).splitlines()[0]
            where = f"{endpoint}/{model.repo_id}"
            return DownloadError(message.format(m=model, where=where, error=first) + _OR_LOCAL)
    return DownloadError(f"cannot get {model.label} from {endpoint} ({error}); {_OR_LOCAL}")


def _expected(model: ModelSpec, remote: _Remote) -> ModelSpec:
    """``model`` with the sha256 and size to verify; the registry and the hub must agree."""
    for what, ours, theirs in (
        ("sha256", model.sha256, remote.sha256),
        ("size", model.size, remote.size),
    ):
        if ours is not None and theirs is not None and ours != theirs:
            raise DownloadError(
                f"{model.repo_id}@{model.revision} serves {model.filename} with {what} "
                f"{theirs}, but repoctx expects {ours}; nothing was downloaded. Pull it as "
                f"{model.repo_id}:{model.filename} to take the hub's file, or update repoctx"
            )
    size = model.size if model.size is not None else remote.size
    return replace(model, sha256=model.sha256 or remote.sha256, size=size)


def _download(model: ModelSpec, remote: _Remote, partial: Path, on_event: EventSink) -> None:
    """Append to ``partial`` from where it stopped; it stays on disk if anything fails."""
    import httpx2
    from huggingface_hub import get_token
    from huggingface_hub.file_download import http_get

    size = model.size
    done = partial.stat().st_size if partial.is_file() else 0
    if size is not None and done > size:
        partial.unlink()
        done = 0
    needed, free = (size or 0) - done, shutil.disk_usage(partial.parent).free
    if needed > free:
        raise DownloadError(
            f"{model.label} needs {needed / 1e9:.1f} GB more but {partial.parent} has "
            f"{free / 1e9:.1f} GB free; free some space or set REPOCTX_HOME to a larger disk"
        )
    on_hub = urlsplit(remote.url).netloc == urlsplit(_endpoint()).netloc
    token = get_token() if on_hub else None  # never send the token on to a CDN
    headers = {"authorization": f"Bearer {token}"} if token else {}
    bar = _progress_class(on_event, size)
    try:
        with partial.open("ab") as handle:
            http_get(
                remote.url,
                handle,
                resume_size=done,
                headers=headers,
                tqdm_class=bar,
                expected_size=size,
            )
    except (httpx2.HTTPError, OSError) as error:
        have = partial.stat().st_size if partial.is_file() else 0
        raise DownloadError(
            f"the download of {model.label} stopped after {have:,} of {size or 0:,} bytes "
            f"({type(error).__name__}: {error}); run `repoctx models pull {model.label}` "
            "again to resume"
        ) from error


def _progress_class(on_event: EventSink, size: int | None) -> Any:
    """A tqdm stand-in for ``http_get`` that reports bytes as Progress events, never prints."""

    class _Bar:
        def __init__(self, *args: object, **kwargs: Any) -> None:
            self.n = int(kwargs.get("initial") or 0)
            self.total = int(kwargs.get("total") or size or 0)
            self._emit()

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            self._emit()

        def _emit(self) -> None:
            on_event(Progress(stage="download", done=self.n, total=self.total, unit="bytes"))

    return _Bar


def _verify(partial: Path, model: ModelSpec, on_event: EventSink) -> str:
    """The sha256 of ``partial`` if it has the expected size and hash; else remove it."""
    actual = partial.stat().st_size
    digest = _sha256(partial, on_event)
    size, sha256 = model.size, model.sha256
    if (size is not None and actual != size) or (sha256 is not None and digest != sha256):
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"the download of {model.label} is corrupt ({actual:,} bytes, sha256 {digest}; "
            f"expected {size if size is not None else '?'} bytes, sha256 {sha256}); it was "
            f"removed; run `repoctx models pull {model.label}` again"
        )
    return digest


def _sha256(path: Path, on_event: EventSink) -> str:
    total, done, digest = path.stat().st_size, 0, hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
            done += len(block)
            on_event(Progress(stage="verify", done=done, total=total, unit="bytes"))
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_marker(path: Path, sha256: str, revision: str) -> None:
    stat = path.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    _marker(path).write_text(json.dumps({**record, "revision": revision}), encoding="utf-8")


def _marker_matches(path: Path, model: ModelSpec | None) -> bool:
    """The file was verified and has not changed since (same size and mtime); for a model,
    also at the same revision and, where the registry pins one, with its sha256."""
    try:
        record = json.loads(_marker(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    same = record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
    if model is None or not same:
        return same
    pinned = model.sha256 is None or record.get("sha256") == model.sha256
    return pinned and record.get("revision") == model.revision
