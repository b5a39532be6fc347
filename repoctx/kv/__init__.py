"""The KV state store: saved llama.cpp KV states on disk, keyed by content."""
