"""What tiktoken needs to reproduce llama.cpp's BPE of one vocabulary (``repoctx.tokens.bperanks``
derives it; ``repoctx.tokens.shippedranks`` ships it for known vocabularies)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ranks:
    """What tiktoken needs for one vocabulary; derived once and cached on disk."""

    pieces: list[bytes]  # the 256 single bytes in order, then every other mergeable string
    ranks: list[int]  # its tiktoken rank
    ids: list[int]  # its GGUF token id; -1 for a byte the vocabulary lacks (dropped)
    user_defined: list[tuple[str, int]]  # texts matched before BPE, and their ids
    control: list[tuple[str, int]]  # control tokens (chat template markers), and their ids
