"""The recipe table: one row per registered optimizer, driving the generic contract tests.

Rows live in one file per optimizer family (tests/recipes_<family>.py), each owned by that
method's implementer. Fields (see recipe_types.Recipe):
    hp:          hyperparameters for the tiny-classifier / resume / fast-path tests
    toy_hp:      hyperparameters for the quadratic and Rosenbrock problems
    quadratic:   "converges" or a Finding(reason, check) that the test asserts instead
    rosenbrock:  same
    invalid:     [(kwargs, exact message prefix)] that __init__ must reject with ValueError
    fast_path:   the optimizer has a `foreach` flag whose True path must match the reference loop
    closure:     step() is called with a closure in the generic tests
"""

from __future__ import annotations

from recipe_types import Finding, Recipe  # noqa: F401  (re-exported for the tests)
from recipes_biostatis import ROWS as _BIOSTATIS
from recipes_enhanced_sgd import ROWS as _ENHANCED_SGD
from recipes_neuroplastic import ROWS as _NEUROPLASTIC

TORCH_ROWS: list[Recipe] = [
    Recipe("sgd", hp={"lr": 0.05}, toy_hp={"lr": 1e-3}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("adam", hp={"lr": 1e-2}, toy_hp={"lr": 2e-2}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("adamw", hp={"lr": 1e-2}, toy_hp={"lr": 2e-2, "weight_decay": 0.0}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("rmsprop", hp={"lr": 1e-2}, toy_hp={"lr": 1e-2}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
]

RECIPES: list[Recipe] = [*TORCH_ROWS, *_BIOSTATIS, *_NEUROPLASTIC, *_ENHANCED_SGD]
BY_NAME = {r.name: r for r in RECIPES}
