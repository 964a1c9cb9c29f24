"""Fast-path plumbing for the compiled kernels of BiostatisV6 and NeuroPlastic (kept out of the optimizer classes).

`alias_1d(x)` hands a tensor to a torch.compile'd kernel as a plain 1-D tensor on the same memory. A
`x.view(-1)` would do the same arithmetic, but a view carries its `_base` (the parameter with its own
shape), and dynamo guards on the base's sizes: every new parameter rank then recompiles the kernel
(3 compiles per kernel on ResNet-18 instead of 2), and each call replays the views of the mutated
inputs (`as_strided`), which cost as much as a small kernel. `compile_cache_dir()` gives inductor a
cache directory that outlives /tmp cleaning, so that a later process is served the compiled kernels
from disk (inductor's FX graph cache) instead of compiling them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: where inductor caches compiled kernels unless TORCHINDUCTOR_CACHE_DIR is set (shared by every process)
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optirep" / "torchinductor"


def alias_1d(x: torch.Tensor) -> torch.Tensor:
    """A contiguous `x` as a 1-D tensor sharing its memory and not a view of it (no `_base`); else `x`.

    Writes through the alias change `x`. Its version counter is its own: callers that write through it
    call `bump_versions` on the originals afterwards, as torch's in-place ops would have.
    """
    if not x.is_contiguous():
        return x
    out = x.new_empty(0)
    out.set_(x.untyped_storage(), x.storage_offset(), (x.numel(),), (1,))
    return out


def bump_versions(tensors) -> None:
    """Count one in-place write on each tensor (what autograd's saved-tensor check looks at)."""
    for t in tensors:
        torch.autograd.graph.increment_version(t)


def abs_tanh(x: torch.Tensor) -> torch.Tensor:
    """|tanh x| as -e / (2 + e) with e = expm1(-2|x|), inside compiled kernels: inductor's vectorised exp is
    ~2x cheaper than its tanh on CPU, and this form is exact at 0, never overflows and agrees with tanh to a
    few ulp (BiostatisV6's coherence sensor averages it over a whole tensor)."""
    e = torch.expm1(-2.0 * x.abs())
    return -e / (2.0 + e)


def compile_cache_dir() -> str:
    """TORCHINDUCTOR_CACHE_DIR, set to DEFAULT_CACHE_DIR first if the user has not chosen one."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        DEFAULT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(DEFAULT_CACHE_DIR)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


# ----------------------------------------------------------------------------- EnhancedSGD's histogram
def _bin_index_kernel(x, lo, hi, bins: int):
    """torch.histc's bin of each element: trunc((x - lo) * bins / (hi - lo)), the top edge in the last bin.

    The same float operations in the same order as ATen's histc kernel (linear bins, no local search), so
    the counts are identical; elements are inside [lo, hi] by construction (lo, hi = min, max). uint8 for
    up to 256 bins (a quarter of int32's bytes to write and for `bincount` to read; ~1.8x faster bincount).
    """
    idx = ((x - lo) * bins / (hi - lo)).to(torch.int32)
    idx = torch.where(idx >= bins, bins - 1, idx)
    return idx.to(torch.uint8) if bins <= 256 else idx


def histc_counts(parts: list[torch.Tensor], lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor | None:
    """Counts of `torch.histc` over the concatenation of `parts` on [lo, hi] with `bins` bins, or None.

    One compiled pass per tensor (tensors under
    SMALL_NUMEL elements concatenated into one) writes each element's bin (uint8 for <= 256 bins), then
    `torch.bincount` counts them. On one CPU thread the compiled pass is ~4x faster than `torch.histc` (which
    searches its bin edges per element), with the same counts. None where this does not apply (a non-finite range, which torch.histc reports as an error;
    fewer than AUTO_COMPILE_MIN_NUMEL elements; torch.compile unavailable): the caller uses torch.histc.
    """
    from ._base import compiled, use_compiled

    n = sum(x.numel() for x in parts)
    if not parts or not use_compiled("auto", n, parts[0].device):
        return None
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        return None
    kernel = compiled(_bin_index_kernel)
    counts = torch.zeros(bins, dtype=torch.int64, device=parts[0].device)
    small = [x.reshape(-1) for x in parts if x.numel() < SMALL_NUMEL]
    parts = [x for x in parts if x.numel() >= SMALL_NUMEL] + ([torch.cat(small)] if small else [])
    for x in parts:
        counts += torch.bincount(kernel(alias_1d(x.contiguous()), lo, hi, bins), minlength=bins)
    return counts.to(parts[0].dtype)


# ----------------------------------------------------------------------------- small tensors, gathered
#: In the compiled paths of BiostatisV6 and NeuroPlastic, tensors with fewer elements than this do not get
#: their own compiled kernel calls (each costs ~30-90 us of dynamo/AOT wrapping on CPU, more than the arithmetic
#: on a bias or a norm weight): they are gathered into one flat buffer per operand, run through one compiled kernel
#: of the same arithmetic (per-element coefficients, per-tensor sums taken outside) and scattered back.
#: ResNet-18: 43 of 62 tensors (norm weights and biases, the stem, the first 1x1 shortcut, the fc bias), 0.24% of
#: the elements.
SMALL_NUMEL = 1 << 14


class Gathered:
    """Tensors of different sizes as one flat buffer per operand, with per-tensor sums over the members.

    `sizes` are the member tensors' element counts (T of them, n elements in all). `gather(xs)` concatenates
    same-sized members into one 1-D tensor of n; `scatter(flat, xs)` copies it back into them (a real
    in-place write on each, so autograd's version counters move); `sums(terms)` turns a [k, n] tensor of
    per-element terms into [k, T] per-tensor sums (torch.sum over each member's slice); `expand(rows)` turns
    [k, T] per-tensor values into [k, n] per-element ones.
    """

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = list(sizes)

    def gather(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.reshape(-1) for x in xs])

    def scatter(self, flat: torch.Tensor, xs: list[torch.Tensor]) -> None:
        torch._foreach_copy_(xs, self.split(flat, xs))

    def split(self, flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Views of `flat` (1-D) shaped like each of `like`."""
        return [c.view(x.shape) for c, x in zip(flat.split(self.sizes), like)]

    def sums(self, terms: torch.Tensor) -> torch.Tensor:
        return torch.stack([c.sum(1) for c in terms.split(self.sizes, 1)], 1)

    def expand(self, rows: torch.Tensor) -> torch.Tensor:
        k = rows.shape[0]
        return torch.cat([r.expand(k, n) for r, n in zip(rows.unsqueeze(2).unbind(1), self.sizes)], 1)


def partition(xs: list[torch.Tensor], threshold: int | None = None) -> tuple[list[int], list[tuple[list[int], Gathered]]]:
    """(indices of the tensors with >= threshold elements, [(indices, Gathered)] of the smaller ones, one
    bucket per dtype); threshold defaults to SMALL_NUMEL. The tensors are on one device."""
    threshold = SMALL_NUMEL if threshold is None else threshold
    big, small = [], {}
    for i, x in enumerate(xs):
        if x.numel() >= threshold:
            big.append(i)
        else:
            small.setdefault(x.dtype, []).append(i)
    return big, [(idx, Gathered([xs[i].numel() for i in idx])) for idx in small.values()]
