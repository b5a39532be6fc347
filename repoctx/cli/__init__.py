"""The command line front end (``repoctx ...``), its rendering of events, the benchmarks and the
synthetic-model writer."""
