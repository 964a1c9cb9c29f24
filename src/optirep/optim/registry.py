"""The registry entry type and torch's own baselines.

Every optimizer optirep can train is one `Entry`. The bio-optimizer modules each export
`ENTRIES: list[Entry]`; `optirep.optim` collects them in an explicit list.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

#: torch optimizers a bio optimizer may reduce to when all its mechanisms are off.
BASELINES: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def _passthrough(baseline: str) -> Callable[[dict], dict]:
    """Map resolved hyperparameters to the baseline's kwargs by name (those it accepts)."""
    accepted = set(inspect.signature(BASELINES[baseline].__init__).parameters) - {"self", "params"}

    def to_baseline(hp: dict) -> dict:
        return {k: v for k, v in hp.items() if k in accepted}

    return to_baseline


@dataclass(frozen=True)
class Entry:
    """One registered optimizer.

    Attributes:
        name: lowercase registry name (what experiment YAMLs use).
        cls: the `torch.optim.Optimizer` subclass.
        defaults: hyperparameters this entry builds with unless overridden. For bio optimizers
            these are the seed's values (what `build(name, params)` gives).
        baseline: "adamw", "adam", "sgd" or "rmsprop": the torch optimizer this one reduces to.
        mechanisms_off: kwargs that switch every bio mechanism to its exact identity, so that
            `build(name, params, **hp, **mechanisms_off)` follows `baseline` step for step.
        to_baseline: maps the resolved hyperparameters (defaults | hp | mechanisms_off) to the
            kwargs of the baseline torch optimizer. Default: pass through the names it accepts.
        summary: one line for `optirep optimizers` and the paper.
        needs_closure: the optimizer's full mechanism only runs when `step()` gets a closure
            (EnhancedSGD's controller); the training loop then always passes one.
    """

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: Mapping[str, Any]
    baseline: str
    mechanisms_off: Mapping[str, Any] = field(default_factory=dict)
    to_baseline: Callable[[dict], dict] | None = None
    summary: str = ""
    needs_closure: bool = False

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"Entry {self.name!r}: baseline must be one of {sorted(BASELINES)}, got {self.baseline!r}")
        if self.to_baseline is None:
            object.__setattr__(self, "to_baseline", _passthrough(self.baseline))

    @property
    def baseline_cls(self) -> type[torch.optim.Optimizer]:
        return BASELINES[self.baseline]


TORCH_ENTRIES = [
    Entry("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, "sgd",
          summary="torch.optim.SGD with heavy-ball momentum"),
    Entry("adam", torch.optim.Adam, {"lr": 1e-3}, "adam", summary="torch.optim.Adam"),
    Entry("adamw", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}, "adamw", summary="torch.optim.AdamW"),
    Entry("rmsprop", torch.optim.RMSprop, {"lr": 1e-3}, "rmsprop", summary="torch.optim.RMSprop"),
]
