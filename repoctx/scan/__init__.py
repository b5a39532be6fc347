"""Stage 1: roots --scan--> Snapshot: listing, ignoring and classifying each root's files."""
