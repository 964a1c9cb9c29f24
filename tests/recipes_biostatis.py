"""Recipe rows for the biostatis optimizers (see tests/recipes.py)."""

from recipe_types import Finding, Recipe  # noqa: F401

ROWS: list[Recipe] = []
