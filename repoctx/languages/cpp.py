"""C++: ``#include`` as in C (same lookup, headers of both languages), bodies of functions,
methods, constructors and templates elided in reductions."""

from __future__ import annotations

from repoctx.languages.c import IncludeSpec

SPEC = IncludeSpec("cpp", "tree_sitter_cpp")
