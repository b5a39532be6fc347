"""One exception tree for the whole library.

Every message says what to do next. Front ends catch ``RepoctxError`` at their edge, print
``str(error)`` on one line and exit with ``error.exit_code``; nothing else is caught.

    RepoctxError
    ├── UsageError            bad arguments or options (exit 2)
    │   ├── PathNotFoundError
    │   ├── NotADirectoryError_
    │   ├── PathNotUtf8Error
    │   └── BudgetTooSmallError
    ├── PackError             the inputs cannot make a pack (exit 3)
    │   ├── EmptyRepositoryError
    │   └── NothingToPackError
    ├── ConfigError           a config file cannot be read (exit 2)
    ├── ModelError            the model file cannot be used (exit 4)
    │   ├── TokenizerError
    │   ├── DownloadError     a model cannot be downloaded or verified
    │   └── EngineError       the resident engine cannot be started, reached or understood
    │       └── EngineVersionError  it runs another version of repoctx
    └── CacheError            a cache cannot be written at all (exit 5)
        └── StateLoadError    llama.cpp rejected a saved KV state (the store removes it)
"""

from __future__ import annotations


class RepoctxError(Exception):
    """Base of every error repoctx raises on purpose."""

    exit_code = 1


class UsageError(RepoctxError):
    exit_code = 2


class PathNotFoundError(UsageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: no such file or directory; pass the path of a repository folder")


class NotADirectoryError_(UsageError):  # the builtin name is taken
    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: is a file, not a directory; pass the repository's folder")


class PathNotUtf8Error(UsageError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: the folder's path is not UTF-8 (its bytes are escaped here); rename it to "
            "pack it"
        )


class BudgetTooSmallError(UsageError):
    def __init__(self, budget: int, overhead: int) -> None:
        super().__init__(
            f"budget of {budget:,} tokens is smaller than the pack's fixed overhead of "
            f"{overhead:,} tokens; pass --budget {overhead + 1:,} or more"
        )


class PackError(RepoctxError):
    exit_code = 3


class EmptyRepositoryError(PackError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: the repository has no files; add and commit files, or point at another folder"
        )


class NothingToPackError(PackError):
    def __init__(self, path: str, omitted: int) -> None:
        super().__init__(
            f"{path}: none of its {omitted:,} files can be packed (see `repoctx pack --stats` "
            "for each reason); check --include/--exclude and .repoctxignore"
        )


class ConfigError(RepoctxError):
    exit_code = 2


class ModelError(RepoctxError):
    exit_code = 4


class TokenizerError(ModelError):
    pass


class DownloadError(ModelError):
    """A model could not be downloaded or did not verify; the message says what to do."""


class EngineError(ModelError):
    """The resident engine process (``repoctx engine``) failed to start, stopped answering or
    sent something this client does not understand; the message names its log file."""


class EngineVersionError(EngineError):
    """The resident engine speaks another version: the client stops it and starts its own."""


class CacheError(RepoctxError):
    exit_code = 5


class StateLoadError(CacheError):
    """Raised by the engine's reader when llama.cpp cannot load a saved KV state file. The KV
    store catches it, removes the state and the engine evaluates the prompt again."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"{detail}; the saved state is unusable: it is removed and the prompt evaluated again"
        )
        self.detail = detail
