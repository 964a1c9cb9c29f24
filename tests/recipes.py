"""The recipe table: one row per registered optimizer, driving the generic contract tests.

Each method's owner edits only its own rows. Fields:
    hp:          hyperparameters for the tiny-classifier / resume / fast-path tests
    toy_hp:      hyperparameters for the quadratic and Rosenbrock problems
    quadratic:   "converges" or a Finding(reason, check) that the test asserts instead
    rosenbrock:  same
    invalid:     [(kwargs, exact message)] that __init__ must reject with ValueError
    fast_path:   the optimizer has a `foreach` flag whose True path must match the reference loop
    closure:     step() is called with a closure in the generic tests
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Finding:
    """A measured property that stands in for convergence: `check(final_distance, start_distance)`
    must hold, and `reason` says why the method faithfully cannot converge."""

    reason: str
    check: Callable[[float, float], bool]


@dataclass(frozen=True)
class Recipe:
    name: str
    hp: dict[str, Any] = field(default_factory=dict)
    toy_hp: dict[str, Any] = field(default_factory=dict)
    toy_steps: int = 2000
    quadratic: Any = "converges"
    rosenbrock: Any = "converges"
    invalid: list = field(default_factory=list)
    fast_path: bool = True
    closure: bool = False


RECIPES: list[Recipe] = [
    Recipe("sgd", hp={"lr": 0.05}, toy_hp={"lr": 1e-3}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("adam", hp={"lr": 1e-2}, toy_hp={"lr": 2e-2}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("adamw", hp={"lr": 1e-2}, toy_hp={"lr": 2e-2, "weight_decay": 0.0}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    Recipe("rmsprop", hp={"lr": 1e-2}, toy_hp={"lr": 1e-3}, fast_path=False,
           invalid=[({"lr": -1.0}, "Invalid learning rate: -1.0")]),
    # --- bio optimizers: rows added by their owners below this line ---
]

BY_NAME = {r.name: r for r in RECIPES}
