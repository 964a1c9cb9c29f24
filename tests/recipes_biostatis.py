"""Recipe rows for the biostatis optimizers (see tests/recipes.py)."""

from recipe_types import Finding, Recipe  # noqa: F401

_INVALID = [
    ({"lr": -1.0}, "Invalid lr: -1.0 (must be a finite number >= 0)"),
    ({"betas": (1.0, 0.999)}, "Invalid betas[0]: 1.0 (must be in [0, 1))"),
    ({"memory_decays": (0.9,)}, "Invalid memory_decays: (0.9,) (must be a pair)"),
    ({"homeo_rate": -0.1}, "Invalid homeo_rate: -0.1"),
    ({"global_share": 1.5}, "Invalid global_share: 1.5 (must be in [0, 1])"),
    ({"local_clamp": (1.15, 0.85)}, "Invalid local_clamp: (1.15, 0.85) (must be a pair (lo, hi) with 0 <= lo <= hi)"),
    ({"hierarchy": "local"}, "Invalid hierarchy: 'local' (must be one of ['hierarchical', 'global'])"),
    ({"importance_eps": 0.0}, "Invalid importance_eps: 0.0 (must be a finite number > 0)"),
    ({"diag_every": -1}, "Invalid diag_every: -1 (must be an int >= 0)"),
    ({"foreach": "yes"}, "Invalid foreach: 'yes' (must be None, True or False)"),
]

ROWS: list[Recipe] = [
    Recipe("biostatis_v6", hp={"lr": 1e-2, "diag_every": 3}, toy_hp={"lr": 2e-2, "weight_decay": 0.0},
           invalid=_INVALID, fast_path=True),
    Recipe("biostatis_v6_global", hp={"lr": 1e-2, "diag_every": 3}, toy_hp={"lr": 2e-2, "weight_decay": 0.0},
           invalid=_INVALID, fast_path=True),
]
