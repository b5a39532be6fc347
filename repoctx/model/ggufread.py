"""The one GGUF reader: the header, the typed key/value pairs and the tensor table of a GGUF file
(versions 2 and 3, either byte order), read from a memory map.

Arrays are skipped, not decoded, unless the caller asks for them, so that a 128k-token
vocabulary costs nothing to pass over. Nothing here imports numpy or gguf (see
``repoctx.tokens.count`` for why that matters). ``modelfile`` reads model metadata through it,
``synthvocab`` copies vocabularies with it; each words its own errors from ``GGUFError``.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
VERSIONS = (2, 3)
STRING, ARRAY = 8, 9
SCALARS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip
"""struct format of each scalar GGUF value type (7 is bool)."""
DEFAULT_ALIGNMENT = 32
_SMALLEST_FILE = 24  # magic, version, tensor count, key/value count

Typed = tuple[Any, int, int | None]
"""A value with its GGUF value type and, for an array, the type of its items."""

__all__ = [
    "ARRAY",
    "STRING",
    "Cursor",
    "Entry",
    "GGUFError",
    "Typed",
    "UnsupportedVersion",
    "data_offset",
    "entries",
    "mapped",
    "open_cursor",
    "typed_metadata",
]


class GGUFError(ValueError):
    """The bytes are not a GGUF file this reader understands; the message says why."""


class UnsupportedVersion(GGUFError):
    """A GGUF file of another version than 2 or 3."""

    def __init__(self, version: int) -> None:
        super().__init__(f"GGUF version {version} is not supported (2 and 3 are)")
        self.version = version


class Truncated(GGUFError):
    """The metadata runs past the end of the file, or a length or type is impossible."""

    def __init__(self) -> None:
        super().__init__("its metadata is truncated or corrupt")


@dataclass(frozen=True)
class Entry:
    """One key/value pair. ``value`` is None for an array that was skipped; ``start``/``end``
    are the entry's bytes in the file."""

    key: str
    kind: int  # the GGUF value type
    item_kind: int | None  # arrays: the type of their items
    count: int | None  # arrays: how many items
    value: Any
    start: int
    end: int


class Cursor:
    """Sequential reads from the mapped file in the file's byte order. Keys are always text;
    string values are text (undecodable bytes kept as surrogates) or, with ``raw_strings``,
    the bytes as stored."""

    def __init__(self, buffer: mmap.mmap, endian: str, raw_strings: bool = False) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.endian = endian
        self.raw_strings = raw_strings
        self.pos = 0
        self._u64 = struct.Struct(endian + "Q")

    def advance(self, length: int) -> int:
        start, self.pos = self.pos, self.pos + length
        if self.pos > self.size:
            raise Truncated
        return start

    def scalar(self, code: str) -> Any:
        start = self.advance(struct.calcsize(code))
        return struct.unpack_from(self.endian + code, self.buffer, start)[0]

    def string(self) -> str:
        start = self.advance(self.scalar("Q"))
        return self.buffer[start : self.pos].decode("utf-8", "surrogateescape")

    def string_value(self) -> str | bytes:
        if not self.raw_strings:
            return self.string()
        start = self.advance(self.scalar("Q"))
        return self.buffer[start : self.pos]

    def skip_strings(self, count: int) -> None:
        unpack, buffer, pos = self._u64.unpack_from, self.buffer, self.pos
        try:
            for _ in range(count):
                pos += 8 + unpack(buffer, pos)[0]
        except struct.error as error:
            raise Truncated from error
        self.advance(pos - self.pos)

    def _strings(self, count: int) -> list[Any]:
        """``count`` strings in a row (a vocabulary: tens of thousands, read in one loop)."""
        unpack, buffer, pos, size = self._u64.unpack_from, self.buffer, self.pos, self.size
        strings: list[bytes] = []
        append = strings.append
        try:
            for _ in range(count):
                start = pos + 8
                pos = start + unpack(buffer, pos)[0]
                if pos > size:
                    raise Truncated
                append(buffer[start:pos])
        except struct.error as error:
            raise Truncated from error
        self.pos = pos
        if self.raw_strings:
            return strings
        return [text.decode("utf-8", "surrogateescape") for text in strings]

    def skip_value(self, kind: int) -> None:
        if kind == STRING:
            self.skip_strings(1)
        elif kind == ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            self.skip_array(item_kind, count)
        elif kind in SCALARS:
            self.advance(struct.calcsize(SCALARS[kind]))
        else:
            raise Truncated

    def skip_array(self, item_kind: int, count: int) -> None:
        if item_kind == STRING:
            self.skip_strings(count)
        elif item_kind in SCALARS:
            self.advance(count * struct.calcsize(SCALARS[item_kind]))
        elif count > self.size:
            raise Truncated
        else:
            for _ in range(count):
                self.skip_value(item_kind)

    def read_array(self, item_kind: int, count: int) -> list[Any]:
        if count > self.size:
            raise Truncated
        if item_kind == STRING:
            return self._strings(count)
        if item_kind == ARRAY:
            return [self.read_array(self.scalar("I"), self.scalar("Q")) for _ in range(count)]
        code = SCALARS.get(item_kind)
        if code is None:
            raise Truncated
        values = array("B" if code == "?" else code)
        values.frombytes(self.buffer[self.advance(count * values.itemsize) : self.pos])
        if values.itemsize > 1 and (self.endian == ">") != (sys.byteorder == "big"):
            values.byteswap()
        items = values.tolist()
        return [bool(item) for item in items] if code == "?" else items


@contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap]:
    """The file mapped read-only. Raises ``GGUFError`` for a file too short to be a GGUF, and
    ``OSError`` as ``open`` does."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size < _SMALLEST_FILE:
            raise GGUFError("the file is too short")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            yield buffer


def open_cursor(buffer: mmap.mmap, raw_strings: bool = False) -> tuple[Cursor, int, int]:
    """A cursor after the header, the tensor count and the key/value count. Raises
    ``GGUFError`` (``UnsupportedVersion`` for other versions than 2 and 3)."""
    if buffer[:4] != MAGIC:
        raise GGUFError("it does not start with the GGUF signature")
    endian = "<"
    version = struct.unpack_from("<I", buffer, 4)[0]
    if version & 0xFFFF == 0:  # a big-endian file reads as a byte-swapped version
        endian, version = ">", struct.unpack_from(">I", buffer, 4)[0]
    if version not in VERSIONS:
        raise UnsupportedVersion(version)
    cursor = Cursor(buffer, endian, raw_strings)
    cursor.pos = 8
    return cursor, cursor.scalar("Q"), cursor.scalar("Q")


def entries(cursor: Cursor, kv_count: int, read_array: Callable[[str], bool]) -> Iterator[Entry]:
    """The ``kv_count`` key/value pairs at the cursor; an array is decoded where
    ``read_array(key)`` says so, else skipped. Raises ``GGUFError`` when they are cut short."""
    if kv_count > cursor.size:
        raise Truncated
    for _ in range(kv_count):
        start = cursor.pos
        key, kind = cursor.string(), cursor.scalar("I")
        item_kind: int | None = None
        count: int | None = None
        value: Any = None
        if kind == ARRAY:
            item_kind, count = cursor.scalar("I"), cursor.scalar("Q")
            if read_array(key):
                value = cursor.read_array(item_kind, count)
            else:
                cursor.skip_array(item_kind, count)
        elif kind == STRING:
            value = cursor.string_value()
        elif kind in SCALARS:
            value = cursor.scalar(SCALARS[kind])
        else:
            raise Truncated
        yield Entry(key, kind, item_kind, count, value, start, cursor.pos)


def data_offset(cursor: Cursor, tensor_count: int, alignment: object) -> int:
    """Where the tensor data starts: after the tensor table at the cursor (read past), aligned
    to ``general.alignment`` (``alignment``, when it is a positive whole number). Raises
    ``GGUFError`` when the table is cut short or the data is missing."""
    if tensor_count > cursor.size:
        raise Truncated
    for _ in range(tensor_count):
        cursor.skip_strings(1)
        dimensions = cursor.scalar("I")
        cursor.advance(8 * dimensions + 4 + 8)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    offset = -(-cursor.pos // alignment) * alignment
    if tensor_count and offset > cursor.size:
        raise GGUFError("the tensor data is missing")
    return min(offset, cursor.size)


def typed_metadata(path: Path) -> dict[str, Typed]:
    """Every key/value of the GGUF at ``path`` with its types, arrays decoded and strings as the
    bytes stored (to be written again unchanged). Raises ``GGUFError`` and ``OSError``."""
    with mapped(path) as buffer:
        cursor, _, kv_count = open_cursor(buffer, raw_strings=True)
        found = entries(cursor, kv_count, lambda _key: True)
        return {entry.key: (entry.value, entry.kind, entry.item_kind) for entry in found}
