"""Renderers shared by the operator and the CLI (pure: no cluster, no torch)."""
