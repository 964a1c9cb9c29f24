"""Helpers shared by the bio optimizers: validation, sparse checks, device-side diagnostics, and
`BioOptimizer`, the base class that gives each of them resumable run state, deepcopy/pickle support
and clear refusals of parameters they cannot handle."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Iterable

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
    sums. Nothing here touches the host during `step()`. `state_dict()` / `load_state_dict()`
    carry the running sums, counts and last values, so a resumed run reads exactly what an
    uninterrupted one would (the optimizers put them in their own `state_dict()`).
    """

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor | float] = {}
        self._last: dict[str, torch.Tensor | float] = {}
        self._n: dict[str, int] = {}

    # Outside any torch.compile'd region (torch.compile(opt.step)): the Python-int counts would otherwise be
    # guarded on and recompile the step every time they change.
    @torch.compiler.disable
    def record(self, key: str, value: torch.Tensor | float) -> None:
        self.record_all({key: value})

    @torch.compiler.disable
    def record_all(self, values: dict[str, torch.Tensor | float]) -> None:
        """`record(key, value)` for every item, in one call (one graph break under torch.compile)."""
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self._last[key] = value
            self._sum[key] = self._sum.get(key, 0.0) + value
            self._n[key] = self._n.get(key, 0) + 1

    def pending(self) -> bool:
        """Whether anything was recorded since the previous `read()`."""
        return bool(self._n)

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

    def state_dict(self) -> dict:
        """Copies of the running sums, counts and last values (tensors stay tensors, on their device)."""
        def copy(v):
            return v.clone() if isinstance(v, torch.Tensor) else v
        return {"sum": {k: copy(v) for k, v in self._sum.items()}, "n": dict(self._n),
                "last": {k: copy(v) for k, v in self._last.items()}}

    def load_state_dict(self, sd: dict, device: torch.device | None = None) -> None:
        def put(v):
            return v.detach().clone().to(device) if isinstance(v, torch.Tensor) and device is not None else v
        self._sum = {k: put(v) for k, v in sd["sum"].items()}
        self._n = {k: int(v) for k, v in sd["n"].items()}
        self._last = {k: put(v) for k, v in sd["last"].items()}


def params_with_grad(group: dict, optimizer_name: str) -> Iterable[torch.Tensor]:
    """The group's parameters that take part in a step: those with a gradient and at least one element
    (a zero-element tensor has nothing to update and would only perturb per-tensor statistics)."""
    for p in group["params"]:
        if p.grad is None or p.numel() == 0:
            continue
        check_not_sparse(p.grad, optimizer_name)
        yield p


class BioOptimizer(torch.optim.Optimizer):
    """`torch.optim.Optimizer` plus what every bio optimizer shares.

    * Run state that is not per-parameter (diagnostic running sums, counts and last values, host-side
      step counters in `self._run`) travels in `state_dict()["run_state"]`, so a resumed run logs the
      same diagnostics as an uninterrupted one (torch ignores extra top-level keys; an old state dict
      without the key loads with fresh run state).
    * `copy.deepcopy`, `pickle` and `torch.save(opt)` keep every attribute: torch's own `__getstate__`
      keeps only `defaults`, `state` and `param_groups`, so the copy's first `step()` would fail.
    * Complex parameters are refused when their group is added (TypeError naming the optimizer, the
      parameter and its dtype): the per-tensor statistics these methods compute are defined for real
      tensors only. Optimise `torch.view_as_real(p)`-shaped real parameters instead.
    * A param group added later (`add_param_group`, e.g. unfreezing a head) inherits the run-level
      keys named in `_RUN_KEYS` (e.g. NeuroPlastic's `epoch`, `total_epochs`) from the first group
      instead of the constructor's defaults, unless the new group sets them itself.
    * `_warn_once(key, message)`: one RuntimeWarning per optimizer and key.
    * `torch.compile(opt.step)` compiles once: subclasses keep host-side bookkeeping (Python-int counters,
      Python-float schedules, Q-tables, generators, the diagnostics' running sums) in
      `torch.compiler.disable`d helpers, so that dynamo guards on no value that changes every step. A float
      lr that changes every step (an LR scheduler) still recompiles per value, as with torch's optimizers.

    Subclasses set `_NAME` and call `self._init_run_state()` after `super().__init__`.
    """

    _NAME = "optimizer"
    _RUN_KEYS: tuple[str, ...] = ()
    #: instance attributes left out of copies and pickles (rebuilt when needed)
    _TRANSIENT: tuple[str, ...] = ("_scratch_bufs",)

    def _init_run_state(self) -> None:
        self._diag = Diagnostics()
        self._run: dict[str, Any] = {}  # subclass host counters, e.g. NeuroPlastic's {"steps", "epoch_set"}
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- copying
    def __getstate__(self) -> dict[str, Any]:
        # Instance attributes that shadow a method are wrappers an LR scheduler patched in (opt.step); they
        # point at this optimizer, so a copy must not carry them (torch's own __getstate__ drops them too).
        # Scratch buffers (`_scratch_bufs`) are reallocated on demand and not worth copying.
        return {k: v for k, v in self.__dict__.items()
                if not callable(getattr(type(self), k, None)) and k not in self._TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_diag" not in self.__dict__:  # pickled by torch's own __getstate__
            self._init_run_state()
        self._fill_group_defaults()

    def _fill_group_defaults(self) -> None:
        """Groups saved before a hyperparameter existed get its default (its value before it was a flag)."""
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    # -- resumable run state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["run_state"] = {"diagnostics": self._diag.state_dict(), **copy.deepcopy(self._run)}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        run = state_dict.pop("run_state", None)
        super().load_state_dict(state_dict)
        self._fill_group_defaults()
        if run is None:
            return
        run = dict(run)
        device = next((p.device for g in self.param_groups for p in g["params"]), None)
        self._diag.load_state_dict(run.pop("diagnostics"), device)
        self._run.update(copy.deepcopy(run))

    # -- groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups and isinstance(param_group, dict):
            inherited = {k: self.param_groups[0][k] for k in self._RUN_KEYS if k not in param_group}
            param_group = {**param_group, **inherited}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for i, p in enumerate(group["params"]):
            if torch.is_complex(p):
                self.param_groups.pop()
                raise TypeError(f"{self._NAME} does not support complex parameters: parameter {i} of param group "
                                f"{len(self.param_groups)} has dtype {p.dtype}; optimise its real view "
                                "(torch.view_as_real) as a real parameter instead")


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
        from ._flat import compile_cache_dir

        compile_cache_dir()  # before the first compile of the process: inductor's cache then lives there
        try:
            probe = torch.compile(lambda x: (x * 2.0 + 1.0).sum(), dynamic=True, fullgraph=True)
            _COMPILE_OK[kind] = bool(probe(torch.ones(5, device=device)) == 15.0)
        except Exception as err:  # any backend failure means: use the foreach path
            import warnings

            warnings.warn(f"torch.compile does not work on {kind} here ({type(err).__name__}: {err}); "
                          "the optimizers use their foreach path", RuntimeWarning, stacklevel=3)
            _COMPILE_OK[kind] = False
    return _COMPILE_OK[kind]
