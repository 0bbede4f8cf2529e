"""Scripts that run a peer project in its own benchmark-only environment (never imported by ours)."""
