"""The KV state store's folder (see kv/store.py, formats in kv/files.py): reading its entries and
changing it safely when several repoctx processes share it.

Locking, with fcntl.flock (the kernel drops a dead process's locks, so none go stale):
- ``.lock``, exclusive and brief, around every change of the folder: committing a save,
  removing or evicting entries, sweeping leftovers, rewriting a sidecar. It is not held while
  the engine writes a state or while one is read; waiting for it ends after a timeout.
- each ``ID.state``: shared while the store verifies and the engine reads it; a removal takes it
  exclusive without waiting and skips the entry when it cannot, so a state being loaded is never
  deleted (eviction moves on to the next least recently used entry).
- each temporary ``.tmp-*.state``: exclusive while its save runs, so the sweep of leftovers of
  crashed saves never touches a save in progress.
Reading needs no lock: sidecars are replaced atomically and an entry is committed by writing its
sidecar last and removed by deleting its sidecar first, so a reader sees it whole or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from repoctx import paths
from repoctx.errors import CacheError
from repoctx.fsutil import atomic_write
from repoctx.kv import files as kvfiles
from repoctx.kv.files import BadEntry, Entry, StateKey

_POLL_SECONDS = 0.02
_SUFFIXES = (".json", ".tokens", ".state")


class StoreBusy(Exception):
    """The store's lock stayed taken for the whole timeout."""


class Gone(Exception):
    """The entry was removed or replaced by another process meanwhile: a plain miss."""


def lock(fd: int, *, shared: bool, timeout: float) -> bool:
    """flock ``fd``, polling until ``timeout`` seconds have passed (0: one try); False while
    another open file still holds a conflicting lock."""
    operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)


class Folder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        """Create the folder, owner-only, again if it was deleted."""
        paths.ensure_private_dir(self.root)

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the store-wide lock (StoreBusy after ``timeout`` seconds)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not lock(fd, shared=False, timeout=timeout):
                raise StoreBusy(str(self.root / ".lock"))
            yield
        finally:
            os.close(fd)

    def scan(self) -> tuple[list[Entry], dict[str, BadEntry]]:
        """The entries that read well, and the problem of each other sidecar. An absent folder
        is empty; other errors listing it raise OSError."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return [], {}
        good: list[Entry] = []
        bad: dict[str, BadEntry] = {}
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            ident = name[: -len(".json")]
            try:
                good.append(self.read(ident))
            except FileNotFoundError:
                pass  # removed while we looked
            except BadEntry as problem:
                bad[ident] = problem
            except OSError as error:
                bad[ident] = BadEntry(f"cannot be read ({error})", keep=True)
        return good, bad

    def read(self, ident: str) -> Entry:
        """The entry of a sidecar whose files are present with the recorded sizes; BadEntry
        otherwise, FileNotFoundError when the sidecar itself is gone."""
        entry = kvfiles.parse_entry((self.root / f"{ident}.json").read_bytes(), self.root, ident)
        try:
            size = entry.data_path.stat().st_size
        except FileNotFoundError as error:
            raise BadEntry("is missing (only its metadata is left)") from error
        if size != entry.size:
            raise BadEntry(kvfiles.size_problem(size, entry.size))
        try:
            tokens = entry.tokens_path.stat().st_size
        except FileNotFoundError as error:
            raise BadEntry("has lost its token list") from error
        if tokens != entry.n_tokens * kvfiles.TOKEN_SIZE:
            raise BadEntry("was corrupt (its token list has the wrong size)")
        return entry

    def check(self, fd: int, entry: Entry, key: StateKey) -> str | None:
        """What is wrong with ``entry``, whose state ``fd`` holds open and shared-locked, short
        of its contents (their digest is checked as they are read): None when its sizes and
        token hash agree. Gone when it was removed or replaced since it was read."""
        try:
            current = self.read(entry.id)
            status = os.fstat(fd)
            if not current.same_state(entry) or current.key != key:
                raise Gone
            if status.st_ino != os.stat(entry.data_path).st_ino:
                raise Gone
            if status.st_size != entry.size:
                return kvfiles.size_problem(status.st_size, entry.size)
            if kvfiles.tokens_hash(entry.tokens_path.read_bytes()) != entry.tokens_hash:
                return "was corrupt (its token list does not match its checksum)"
        except BadEntry as bad:
            return bad.reason
        except FileNotFoundError as error:
            raise Gone from error
        except OSError as error:
            return f"could not be read ({error})"
        return None

    def delete(self, ident: str) -> bool:
        """Remove an entry's files, sidecar first, unless a load holds its state or they cannot
        be removed: False then. Store lock held."""
        try:
            fd: int | None = os.open(self.root / f"{ident}.state", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError:
            return False
        try:
            if fd is not None and not lock(fd, shared=False, timeout=0):
                return False
            for suffix in _SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / f"{ident}{suffix}")
            return True
        except OSError:
            return False
        finally:
            if fd is not None:
                os.close(fd)

    def rewrite(self, entry: Entry) -> None:
        """Replace an entry's sidecar atomically (store lock held)."""
        atomic_write(entry.meta_path, kvfiles.entry_json(entry))

    def commit(self, pending: PendingSave, entry: Entry) -> None:
        """Move a finished save into place, sidecar last (store lock held). On failure nothing
        of it is left."""
        try:
            os.replace(pending.tokens, entry.tokens_path)
            os.replace(pending.state, entry.data_path)
            _fsync_dir(self.root)
            self.rewrite(entry)
            _fsync_dir(self.root)
        except BaseException:
            for suffix in _SUFFIXES:
                with contextlib.suppress(OSError):
                    os.unlink(self.root / f"{entry.id}{suffix}")
            raise

    def sweep(self, known: set[str]) -> int:
        """Remove leftovers: temporary files of saves no longer running, and entry files without
        a sidecar. Returns how many files went (store lock held)."""
        try:
            names = set(os.listdir(self.root))
        except OSError:
            return 0
        sidecars = known | {name[: -len(".json")] for name in names if name.endswith(".json")}
        removed = 0
        for name in sorted(names):
            stem, _, suffix = name.rpartition(".")
            if name.startswith(".tmp-") and suffix == "tokens":
                removed += 0 if f"{stem}.state" in names else _unlink(self.root / name)
            elif name.startswith(".tmp-") and suffix == "state":
                if _unlink_unlocked(self.root / name):
                    removed += 1 + _unlink(self.root / f"{stem}.tokens")
            elif name.startswith(".") and name.endswith(".tmp") and ".json." in name:
                removed += _unlink(self.root / name)  # of atomic_write, which runs under the lock
            elif suffix in ("state", "tokens") and stem not in sidecars:
                removed += _unlink_unlocked(self.root / name)
        return removed

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return 1 << 62


class PendingSave:
    """The temporary files of one save: created 0600 and locked so that the sweep of leftovers
    leaves them alone; whatever was not committed is removed on exit. ``fd`` is the state
    file, open for writing."""

    def __init__(self, root: Path, ident: str) -> None:
        stem = f".tmp-{ident}-{secrets.token_hex(4)}"
        self.state = root / f"{stem}.state"
        self.tokens = root / f"{stem}.tokens"
        self.fd = _create_private(self.state)
        lock(self.fd, shared=False, timeout=0)

    def __enter__(self) -> PendingSave:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        for path in (self.tokens, self.state):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def finish(self, data: bytes) -> int:
        """Make the state written to ``fd`` durable and write the token file. Returns the
        state's size."""
        os.fsync(self.fd)
        size = os.fstat(self.fd).st_size
        if size == 0:
            raise CacheError("the engine wrote an empty state file")
        fd = _create_private(self.tokens)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return size


def _create_private(path: Path) -> int:
    """A new file readable by its owner only, opened for writing; fails if it exists."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_unlocked(path: Path) -> int:
    """Remove ``path`` unless someone holds a lock on it; 1 when removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return _unlink(path) if lock(fd, shared=False, timeout=0) else 0
    finally:
        os.close(fd)


def _unlink(path: Path) -> int:
    try:
        os.unlink(path)
        return 1
    except OSError:
        return 0
