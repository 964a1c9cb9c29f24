"""Which code path an optimizer's `step()` takes: recorded next to every timing so a ratio names what it timed.

    from optirep.optim.paths import code_path
    code_path(torch.optim.AdamW(ps, fused=True))   # 'fused'
    code_path(optim.build("biostatis_v6", ps))     # 'compiled' (>= 2^20 elements and torch.compile works)
"""

from __future__ import annotations

import torch

from ._base import use_compiled


def _torch_path(opt: torch.optim.Optimizer, group: dict) -> str:
    if group.get("fused"):
        return "fused"
    foreach = group.get("foreach")
    if foreach is None:  # torch's own default: foreach for CUDA tensors, else the for-loop
        params = [p for p in group["params"]]
        try:
            from torch.optim.optimizer import _default_to_fused_or_foreach

            _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
        except ImportError:  # pragma: no cover - older torch
            foreach = bool(params) and params[0].is_cuda
    return "foreach" if foreach else "for-loop"


def _bio_path(opt: torch.optim.Optimizer, group: dict) -> str:
    if group.get("foreach") is False:
        return "reference"
    if hasattr(opt, "_group_path"):  # an optimizer that decides its own path (EnhancedSGD)
        return opt._group_path(group)
    if "compile" not in group:
        return "foreach"
    params = list(group["params"])
    if not params:
        return "foreach"
    compiles = use_compiled(group["compile"], sum(p.numel() for p in params), params[0].device)
    if compiles and "update_rule" in group:  # NeuroPlastic compiles only its plain classic rule
        compiles = (group["update_rule"] == "classic" and group.get("parameterwise", True)
                    and group.get("lr_controller_mode", "off") == "off")
        if compiles and group.get("diag_every", 0) > 0:
            return "compiled (foreach on diagnostic steps)"
    return "compiled" if compiles else "foreach"


def code_path(opt: torch.optim.Optimizer) -> str:
    """'fused', 'foreach' or 'for-loop' (torch optimizers); 'compiled', 'foreach' or 'reference' (optirep's).

    Several param groups on different paths give their paths joined by '+', in group order.
    """
    is_torch = type(opt).__module__.startswith("torch.")
    paths = []
    for group in opt.param_groups:
        path = _torch_path(opt, group) if is_torch else _bio_path(opt, group)
        if path not in paths:
            paths.append(path)
    return "+".join(paths)
