"""Stage 2: Snapshot --deps--> DepGraph --order--> files: imports and the pack order."""
