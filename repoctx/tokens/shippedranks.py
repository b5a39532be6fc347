"""Ranks that ship with repoctx, for the vocabularies most packs use: the embedded default
model's, and Llama 3's (the target models'), so that the first pack on a machine reads them
(milliseconds) instead of deriving them from the model file (a third of a second for the
embedded vocabulary, over a second for Llama 3's, on the cold run's critical path).

Each file is named by the vocabulary's ranks fingerprint (``ModelInfo.ranks_fingerprint``: a
digest of every entry derivation reads, taken as the model file's header is read), so any model
file built on the same vocabulary finds it, whatever its special token ids or name, and one
whose vocabulary differs in anything derivation reads never does.

Unlike the cache's files (marshal, which each Python version reads only in its own format),
these are portable: a magic line, then zlib of a JSON header line and four sections (piece
lengths as uint16, ranks and ids as int32, little-endian, then the pieces' bytes).

``write_shipped(MODEL)`` writes the file of a model's vocabulary; a test says when to.
"""

from __future__ import annotations

import json
import sys
import zlib
from array import array
from itertools import accumulate, pairwise
from pathlib import Path

from repoctx import fsutil
from repoctx.events import EventSink, Notice
from repoctx.model.modelfile import ModelInfo, read_model_info, read_vocabulary
from repoctx.tokens.ranktable import Ranks

SHIPPED_DIR = Path(__file__).with_name("shipped")
_MAGIC = b"repoctx-shipped-ranks-1\n"


class DamagedShippedRanks(Exception):
    """A shipped file that does not read back (a damaged installation)."""


def shipped_path(info: ModelInfo) -> Path | None:
    """The shipped file of ``info``'s vocabulary, if repoctx ships one. A stat, no read."""
    if info.ranks_fingerprint is None:
        return None
    path = SHIPPED_DIR / f"{info.ranks_fingerprint}.ranks"
    return path if path.is_file() else None


def shipped_ranks(info: ModelInfo, on_event: EventSink) -> Ranks | None:
    """The ranks repoctx ships for ``info``'s vocabulary, or None when it ships none or its
    file does not read back (a notice says so: the ranks are derived instead)."""
    path = shipped_path(info)
    if path is None:
        return None
    try:
        return decode(path.read_bytes())
    except (OSError, DamagedShippedRanks):
        on_event(
            Notice(
                f"{path}: this file of repoctx's installation is damaged; derived the tokenizer "
                "from the model file instead (reinstall repoctx to mend it)"
            )
        )
        return None


def encode(ranks: Ranks) -> bytes:
    header = {"pieces": len(ranks.pieces), "user_defined": ranks.user_defined}
    header["control"] = ranks.control
    sections = [
        json.dumps(header, ensure_ascii=True).encode() + b"\n",
        _little_endian(array("H", map(len, ranks.pieces))),
        _little_endian(array("i", ranks.ranks)),
        _little_endian(array("i", ranks.ids)),
        b"".join(ranks.pieces),
    ]
    return _MAGIC + zlib.compress(b"".join(sections), 9)


def decode(data: bytes) -> Ranks:
    """The ranks in ``data`` (see ``encode``); DamagedShippedRanks if they do not read back."""
    if not data.startswith(_MAGIC):
        raise DamagedShippedRanks("not a shipped ranks file")
    try:
        body = zlib.decompress(data[len(_MAGIC) :])
        line_end = body.index(b"\n")
        header = json.loads(body[:line_end])
        count = header["pieces"]
        lengths, at = _read_array("H", body, line_end + 1, count)
        ranks, at = _read_array("i", body, at, count)
        ids, at = _read_array("i", body, at, count)
        ends = list(accumulate(lengths, initial=at))
        if ends[-1] != len(body):
            raise DamagedShippedRanks("the pieces do not fill the file")
        pieces = [body[start:end] for start, end in pairwise(ends)]
        user_defined = [(str(text), int(token)) for text, token in header["user_defined"]]
        control = [(str(text), int(token)) for text, token in header["control"]]
    except (zlib.error, ValueError, KeyError, TypeError) as error:
        raise DamagedShippedRanks(str(error)) from error
    return Ranks(pieces, ranks.tolist(), ids.tolist(), user_defined, control)


def _little_endian(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def _read_array(code: str, data: bytes, at: int, count: int) -> tuple[array[int], int]:
    values = array(code)
    end = at + values.itemsize * count
    if end > len(data):
        raise DamagedShippedRanks("the file ends early")
    values.frombytes(data[at:end])
    if sys.byteorder == "big":
        values.byteswap()
    return values, end


def write_shipped(model_path: Path) -> Path:
    """Derive the ranks of the model's vocabulary and write them where repoctx ships them."""
    from repoctx.tokens.bperanks import derive_ranks

    info = read_model_info(model_path)
    path = SHIPPED_DIR / f"{info.ranks_fingerprint}.ranks"
    SHIPPED_DIR.mkdir(exist_ok=True)
    fsutil.atomic_write(path, encode(derive_ranks(read_vocabulary(info.path))))
    return path
