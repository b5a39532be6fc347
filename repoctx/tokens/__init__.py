"""Exact token counts for the model in use: tokenizers derived from the GGUF."""
