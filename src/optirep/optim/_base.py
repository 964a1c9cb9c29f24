"""Helpers shared by the bio optimizers: validation, sparse checks, device-side diagnostics."""

from __future__ import annotations

import math
from typing import Iterable

import torch


def check_hp(condition: bool, name: str, value, rule: str) -> None:
    """Raise `ValueError("Invalid <name>: <value> (<rule>)")` unless `condition`."""
    if not condition:
        raise ValueError(f"Invalid {name}: {value!r} ({rule})")


def check_betas(betas, name: str = "betas") -> None:
    check_hp(isinstance(betas, (tuple, list)) and len(betas) == 2, name, betas, "must be a pair")
    for i, b in enumerate(betas):
        check_hp(0.0 <= float(b) < 1.0, f"{name}[{i}]", b, "must be in [0, 1)")


def check_not_sparse(grad: torch.Tensor, optimizer_name: str) -> None:
    if grad.is_sparse:
        raise RuntimeError(f"{optimizer_name} does not support sparse gradients")


class Diagnostics:
    """Accumulates per-step scalar signals on the device; one host sync per `read()`.

    `record(key, t)` adds a 0-d tensor (or float) to a running sum and remembers the last value;
    `read()` returns {key: last, key + "_mean": mean since last read} as floats and resets the
    sums. Nothing here touches the host during `step()`.
    """

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor | float] = {}
        self._last: dict[str, torch.Tensor | float] = {}
        self._n: dict[str, int] = {}

    def record(self, key: str, value: torch.Tensor | float) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
        self._last[key] = value
        self._sum[key] = self._sum.get(key, 0.0) + value
        self._n[key] = self._n.get(key, 0) + 1

    def read(self) -> dict[str, float]:
        """{key: last value, key + "_mean": mean since the previous read}; one host sync.

        A key with nothing recorded since the previous read keeps its last value and has no
        `_mean` entry (nothing to average).
        """
        keys = list(self._last)
        last = torch.stack([torch.as_tensor(self._last[k], dtype=torch.float32).reshape(()).cpu() for k in keys]) \
            if keys else torch.zeros(0)
        fresh = [k for k in keys if self._n.get(k)]
        sums = [torch.as_tensor(self._sum[k], dtype=torch.float32).reshape(()).cpu() for k in fresh]
        out: dict[str, float] = {k: float(v) for k, v in zip(keys, last)}
        for k, s in zip(fresh, sums):
            out[k + "_mean"] = float(s) / self._n[k]
        self._sum.clear()
        self._n.clear()
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


def params_with_grad(group: dict, optimizer_name: str) -> Iterable[torch.Tensor]:
    for p in group["params"]:
        if p.grad is None:
            continue
        check_not_sparse(p.grad, optimizer_name)
        yield p


#: `compile="auto"` compiles a param group's fused kernels only from this many elements on: below it the
#: one-off compile (seconds, cached on disk) costs more than the foreach path could ever lose.
AUTO_COMPILE_MIN_NUMEL = 1 << 20

_COMPILE_OK: dict[str, bool] = {}
_COMPILED: dict = {}


def compiled(fn):
    """`torch.compile(fn)` (dynamic shapes, one graph), built once per process and shared by every optimizer."""
    if fn not in _COMPILED:
        from ._flat import compile_cache_dir

        compile_cache_dir()  # a cache that outlives /tmp: later processes load the kernels from disk
        _COMPILED[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _COMPILED[fn]


def check_compile(value) -> None:
    check_hp(value is True or value is False or value == "auto", "compile", value, "must be True, False or 'auto'")


def use_compiled(setting, numel: int, device: torch.device) -> bool:
    """Whether a group with `numel` elements on `device` takes the torch.compile path.

    True/False force it; "auto" compiles from AUTO_COMPILE_MIN_NUMEL elements on where a probe compile
    works on this device type (no C++ compiler on a CPU host, or no Triton on a GPU host, falls back to
    the foreach path with one warning per process).
    """
    if setting is True or setting is False:
        return setting
    if numel < AUTO_COMPILE_MIN_NUMEL:
        return False
    kind = device.type
    if kind not in _COMPILE_OK:
        try:
            probe = torch.compile(lambda x: (x * 2.0 + 1.0).sum(), dynamic=True, fullgraph=True)
            _COMPILE_OK[kind] = bool(probe(torch.ones(5, device=device)) == 15.0)
        except Exception as err:  # any backend failure means: use the foreach path
            import warnings

            warnings.warn(f"torch.compile does not work on {kind} here ({type(err).__name__}: {err}); "
                          "the optimizers use their foreach path", RuntimeWarning, stacklevel=3)
            _COMPILE_OK[kind] = False
    return _COMPILE_OK[kind]
