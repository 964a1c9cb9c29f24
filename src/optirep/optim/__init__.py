"""Optimizer registry: every optimizer optirep trains, by lowercase name.

    from optirep import optim
    optim.available()                      # ['adam', 'adamw', 'biostatis_v6', ...]
    opt = optim.build("biostatis_v6", model.parameters(), lr=1e-3)
    e = optim.spec("biostatis_v6")         # Entry: cls, defaults, baseline, mechanisms_off
    ablated = optim.build(e.name, params, **e.mechanisms_off)   # == torch AdamW, step for step

    from optirep.optim import BiostatisV6, NeuroPlastic, EnhancedSGD, create_optimizer
    opt = create_optimizer(model, "neuroplastic", lr=0.1)       # biases/norms in a weight_decay=0 group
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from . import biostatis, enhanced_sgd, neuroplastic
from .biostatis import BiostatisV6
from .enhanced_sgd import EnhancedSGD
from .factory import create_optimizer, param_groups_weight_decay
from .neuroplastic import NeuroPlastic
from .registry import BASELINES, TORCH_ENTRIES, Entry

# The explicit list: torch's baselines first, then each seed method's module.
_ALL: list[Entry] = [*TORCH_ENTRIES, *biostatis.ENTRIES, *neuroplastic.ENTRIES, *enhanced_sgd.ENTRIES]

REGISTRY: dict[str, Entry] = {}
for _e in _ALL:
    if _e.name in REGISTRY:
        raise RuntimeError(f"optimizer name registered twice: {_e.name!r}")
    REGISTRY[_e.name] = _e


def available() -> list[str]:
    """Sorted names of every registered optimizer."""
    return sorted(REGISTRY)


def spec(name: str) -> Entry:
    """The registry entry for `name`; ValueError listing the known names if unknown."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(available())}") from None


def resolve_hp(name: str, **hp: Any) -> dict[str, Any]:
    """The entry's defaults overridden by `hp` (what `build` passes to the class)."""
    return {**spec(name).defaults, **hp}


def build(name: str, params: Iterable[torch.Tensor] | Iterable[dict], **hp: Any) -> torch.optim.Optimizer:
    """A ready optimizer: `spec(name).cls(params, **(defaults | hp))`."""
    entry = spec(name)
    return entry.cls(params, **resolve_hp(name, **hp))


def build_baseline(name: str, params, **hp: Any) -> torch.optim.Optimizer:
    """The torch optimizer `name` reduces to, with the kwargs `to_baseline` maps `hp` to."""
    entry = spec(name)
    resolved = {**resolve_hp(name, **hp), **entry.mechanisms_off}
    return entry.baseline_cls(params, **entry.to_baseline(resolved))


__all__ = ["BASELINES", "BiostatisV6", "EnhancedSGD", "Entry", "NeuroPlastic", "REGISTRY", "available", "build",
           "build_baseline", "create_optimizer", "param_groups_weight_decay", "resolve_hp", "spec"]
