"""Placeholder: filled in by the optimizer-core work (issue 2)."""
ENTRIES: list = []
