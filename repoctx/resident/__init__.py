"""The resident engine: one process per user (per REPOCTX_HOME) that keeps the model loaded and
serves every ``repoctx`` process over a Unix socket (docs/engine.md)."""
