"""A sequence's KV state in host memory, in llama.cpp's sequence-state layout.

``llama_state_seq_get_data`` writes a u32 magic, the i32 sequence id, the u32 number of KV
streams, then for each stream a u32 cell count followed, where it is not 0, by the cells'
positions and data. The engine's context gives each sequence a stream of its own (sequences
never attend to each other's cells, so an answer does not depend on what else is loaded), and
the state of the sequence in stream k has k empty counts before its data and the rest after.
Images are kept with a single stream, so that one loads into a context of any number of
streams and into any sequence: the header is rewritten in place, never the data moved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from repoctx.engine.hostmem import HostBuffer, HostPool
from repoctx.engine.native import NativeContext
from repoctx.kv.io import BLOCK

HEADER = struct.Struct("<IiI")  # magic, sequence id, stream count
COUNT = 4
MAX_STREAMS = 64  # slack kept after an image for the empty counts of a many-stream context


def restore_bytes(length: int) -> int:
    """The buffer that a saved state of ``length`` bytes is read into."""
    return length + COUNT * MAX_STREAMS


class BadImage(Exception):
    """A state that does not have the layout described above."""


@dataclass(eq=False)
class StateImage:
    """``length`` bytes at ``offset`` of ``buffer``: a one-stream sequence state."""

    buffer: HostBuffer
    offset: int
    length: int

    @property
    def view(self) -> memoryview:
        return self.buffer.view[self.offset : self.offset + self.length]

    @classmethod
    def capture(cls, context: NativeContext, seq: int, pool: HostPool) -> StateImage:
        """Copy ``seq``'s state out of the context into a buffer of the pool."""
        size = context.state_size(seq)
        # the sequence's stream is its number: its data start after ``seq`` empty counts, and
        # the image there should sit on a block boundary, for direct disk writes (kv/io.py)
        pad = -COUNT * seq % BLOCK
        buffer = pool.take(pad + size + COUNT * MAX_STREAMS)
        try:
            written = context.get_state(seq, buffer.address + pad, size)
            if written != size:
                raise BadImage(f"llama.cpp wrote {written:,} of {size:,} bytes of the state")
            return cls._one_stream(buffer, pad, size)
        except BaseException:
            pool.give_back(buffer)
            raise

    @classmethod
    def empty(cls, length: int, pool: HostPool) -> StateImage:
        """An image of ``length`` bytes to read a saved state into."""
        return cls(pool.take(restore_bytes(length)), 0, length)

    @classmethod
    def _one_stream(cls, buffer: HostBuffer, start: int, size: int) -> StateImage:
        """The state of ``size`` bytes at ``start``, rewritten in place to one stream."""
        view = buffer.view[start : start + size]
        magic, seq, streams = HEADER.unpack_from(view, 0)
        if not 1 <= streams <= MAX_STREAMS:
            raise BadImage(f"a state with {streams} KV streams")
        before = 0
        while before < streams and _count(view, HEADER.size + COUNT * before) == 0:
            before += 1
        after = streams - 1 - before
        if before == streams or any(_count(view, size - COUNT * (i + 1)) for i in range(after)):
            raise BadImage("a state whose sequence is not in exactly one stream")
        offset = COUNT * before
        HEADER.pack_into(view, offset, magic, seq, 1)
        view.release()
        return cls(buffer, start + offset, size - COUNT * (streams - 1))

    def load_into(self, context: NativeContext, seq: int) -> bool:
        """Load into ``seq`` of ``context``; False when llama.cpp rejects the state (then the
        sequence holds nothing)."""
        streams = context.shape.n_seq_max
        view = self.buffer.view
        magic, _, _ = HEADER.unpack_from(view, self.offset)
        end = self.offset + self.length
        extra = COUNT * (streams - 1)
        if end + extra > self.buffer.size:
            return False
        HEADER.pack_into(view, self.offset, magic, seq, streams)
        view[end : end + extra] = bytes(extra)
        try:
            read = context.set_state(seq, self.buffer.address + self.offset, self.length + extra)
        finally:
            HEADER.pack_into(view, self.offset, magic, seq, 1)
        return read == self.length + extra

    def release(self, pool: HostPool) -> None:
        pool.give_back(self.buffer)


def _count(view: memoryview, offset: int) -> int:
    return int.from_bytes(view[offset : offset + COUNT], "little")
