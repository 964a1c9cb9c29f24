"""Types of the recipe table (see tests/recipes.py)."""

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
