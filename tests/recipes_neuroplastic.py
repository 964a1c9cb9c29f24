"""Recipe rows for the neuroplastic optimizers (see tests/recipes.py)."""

from recipe_types import Finding, Recipe  # noqa: F401

# The paper's locked config without the warm-up (the generic tests never call set_epoch, so a
# warm-up would keep alpha = alpha_g throughout): lr 0.1, plasticity_scale 2.
_LOCKED = {"lr": 0.1, "plasticity_scale": 2.0}
_INVALID = [
    ({"lr": -1.0}, "Invalid lr: -1.0 (must be >= 0)"),
    ({"amin": 2.0, "amax": 1.0}, "Invalid amax: 1.0 (must be >= amin (2.0))"),
    ({"mode": "hebbian"}, "Invalid mode: 'hebbian' (must be one of rule_based, ablation_grad_only)"),
    ({"update_rule": "nope"}, "Invalid update_rule: 'nope' (must be one of classic, bounded_residual"),
    ({"max_update_norm": 0.0}, "Invalid max_update_norm: 0.0 (must be > 0"),
    ({"warmup_epochs": -1}, "Invalid warmup_epochs: -1 (must be an int >= 0)"),
    ({"lr_controller_mode": "local"}, "Invalid lr_controller_mode: 'local' (must be one of off, global"),
    ({"base_betas": (0.9, 1.0)}, "Invalid base_betas[1]: 1.0 (must be in [0, 1))"),
    ({"diag_every": -1}, "Invalid diag_every: -1 (must be an int >= 0)"),
]

ROWS: list[Recipe] = [
    Recipe("neuroplastic", hp=dict(_LOCKED), toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
    Recipe("neuroplastic_gradonly", hp={"lr": 0.1}, toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
    Recipe("neuroplastic_lrctl", hp=dict(_LOCKED), toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
    Recipe("neuroplastic_residual", hp=dict(_LOCKED), toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
    Recipe("neuroplastic_orthogonal", hp=dict(_LOCKED), toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
    Recipe("neuroplastic_hybrid_adamw", hp={**_LOCKED, "lr": 0.05}, toy_hp={"lr": 0.03}, toy_steps=1000, invalid=_INVALID),
    Recipe("neuroplastic_hybrid_sgd", hp=dict(_LOCKED), toy_hp={"lr": 0.03}, toy_steps=500, invalid=_INVALID),
]
