"""Recipe rows for the neuroplastic optimizers (see tests/recipes.py)."""

from recipe_types import Finding, Recipe  # noqa: F401

ROWS: list[Recipe] = []
