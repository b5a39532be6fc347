"""Stage 3: ordered files --pack--> Pack: fitted to the token budget and rendered."""
