"""`create_optimizer`: a registry optimizer for a model, with the usual no-weight-decay groups.

    from optirep.optim import create_optimizer
    opt = create_optimizer(model, "biostatis_v6", lr=1e-3, weight_decay=0.05)
    opt = create_optimizer(model, "adamw", weight_decay=0.05, no_decay=("bias", "norm", "pos_emb"))

In the spirit of timm's `create_optimizer_v2` / `param_groups_weight_decay` and pytorch_optimizer's
`create_optimizer(..., wd_ban_list=...)`: parameters that should not be decayed (biases, normalisation
scales, anything named in `no_decay`) go to a second parameter group with `weight_decay=0`; every
other hyperparameter is the registry entry's default (the seed's values for the bio optimizers,
`optirep optimizers` lists them) overridden by `**hp`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

#: Name fragments that put a parameter in the no-decay group (besides every parameter with ndim <= 1).
NO_DECAY = ("bias", "norm")


def param_groups_weight_decay(model: torch.nn.Module, weight_decay: float,
                              no_decay: Iterable[str] | None = NO_DECAY) -> list[dict[str, Any]]:
    """[{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}].

    A trainable parameter goes to the no-decay group when it has at most one dimension (biases,
    LayerNorm/BatchNorm scales: timm's rule) or its name (`model.named_parameters()`) contains one of
    the `no_decay` fragments, compared case-insensitively. `no_decay=None`: one group, everything
    decayed. Frozen parameters (`requires_grad=False`) are left out; empty groups are dropped.
    """
    if no_decay is None:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]
    fragments = tuple(f.lower() for f in no_decay)
    decay, skip = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(f in name.lower() for f in fragments):
            skip.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_optimizer(model: torch.nn.Module, name: str, weight_decay: float | None = None,
                     no_decay: Iterable[str] | None = NO_DECAY, **hp: Any) -> torch.optim.Optimizer:
    """The registry optimizer `name` over `model`'s trainable parameters, biases and norms undecayed.

    Args:
        model: the module whose `named_parameters()` are optimized.
        name: a registry name (`optirep.optim.available()`), e.g. "biostatis_v6", "neuroplastic", "adamw".
        weight_decay: the decay of the decayed group; None keeps the entry's default (for example
            BiostatisV6's 0.01). Must be None or 0 for an optimizer without a `weight_decay` argument.
        no_decay: name fragments of parameters to exempt from decay (see `param_groups_weight_decay`);
            None: a single group. Ignored (one group) when the resolved decay is 0.
        **hp: any other hyperparameter of the optimizer (lr, betas, ..., `steps_per_epoch` where the
            class takes it); unknown names raise TypeError from the class.

    Raises:
        ValueError: `name` is not registered (the message lists the names), or a non-zero
            `weight_decay` for an optimizer that has none.

    Note: the bio optimizers' layer-wise mechanisms see every parameter group; for an optimizer that takes
    `param_order` (NeuroPlastic) the model's parameter order is passed, so its layer labels do not depend
    on the two groups. How a grouping interacts with the "global" statistics is documented on each class.
    """
    from optirep import optim

    entry = optim.spec(name)
    sig = inspect.signature(entry.cls.__init__).parameters
    if "weight_decay" not in sig:
        if weight_decay:
            raise ValueError(f"create_optimizer: {name} ({entry.cls.__name__}) has no weight_decay; "
                             f"got weight_decay={weight_decay}")
        params = [p for p in model.parameters() if p.requires_grad]
        return optim.build(name, params, **hp)
    if "param_order" in sig and "param_order" not in hp:
        # layer labels in model order whatever the grouping (NeuroPlastic's layer-wise mechanisms)
        hp["param_order"] = [p for p in model.parameters() if p.requires_grad]
    if weight_decay is not None:
        hp["weight_decay"] = weight_decay
    default = sig["weight_decay"].default
    wd = optim.resolve_hp(name, **hp).get("weight_decay", 0.0 if default is inspect.Parameter.empty else default)
    hp["weight_decay"] = wd
    if not wd:
        no_decay = None
    return optim.build(name, param_groups_weight_decay(model, wd, no_decay), **hp)
