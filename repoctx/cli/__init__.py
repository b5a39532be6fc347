"""The command line front end (``repoctx ...``), its rendering of events, and the benchmarks."""
