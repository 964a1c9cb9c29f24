"""torch's CPU `Tensor.normal_(generator=g)` (N(0, 1)) for float32, ~1.7x faster on one thread: EnhancedSGD's noise.

On CPU, `normal_` of a contiguous float32 tensor of >= 16 elements draws one uniform per element from the
generator's 32-bit Mersenne Twister (MT19937), one element at a time, then turns blocks of 16 uniforms into normals
with Box-Muller (ATen `normal_fill`; the last 16 elements are redrawn from 16 new uniforms when the size is not a
multiple of 16). Drawing the uniforms is most of its time. This module draws the same uniforms with the same
algorithm in a small C file (compiled once with the system C compiler, cached in inductor's cache directory), on a
copy of the generator's state, and writes the advanced state back into the `torch.Generator`, so that every later
draw, by torch or by this module, continues the same stream; the Box-Muller step runs as one compiled kernel over
every tensor of the call, and a second C pass puts the normals in ATen's order.

What is equal and what is not: the uniforms and the generator state after each call are bit for bit torch's. The
normals agree with torch's to within ATOL (4e-6), not bit for bit: ATen evaluates log/sin/cos with its own
vectorised code and the compiled kernel with inductor's, which differ in the last float32 bits. float64 tensors
(the float64 tests' ground truth) and everything else this module does not handle (< 16 elements, non-contiguous,
other dtypes or devices) go through torch's `normal_`, the same numbers, in stream order.

Checked, not assumed: the first use in a process draws tensors of several sizes and offsets both ways from equal
generators and compares the generator states bit for bit and the normals to ATOL; any difference (another torch
build or state layout), a missing compiler or a failed build makes `normal_` fall back to torch for the rest of
the process, with one warning. Kept float32 scratch buffers of 4 x half the largest call's elements stay
allocated (module level).

Sources: M. Matsumoto and T. Nishimura, "Mersenne Twister", ACM TOMACS 8(1), 1998 (the twist and tempering
constants); ATen `DistributionTemplates.h` (`normal_fill`, `uniform_real_distribution`), `CPUGeneratorImpl.cpp`
(the layout of `Generator.get_state()`).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

_SOURCE = r"""
#include <stdint.h>
#include <math.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif
/* x86-64 GCC: the histogram in one copy per instruction set, picked at load time for this CPU (the library
   stays portable; its division is most of its time) */

#define N 624
#define M 397

static inline uint32_t twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

/* ATen's mt19937::next_state: three loops over the 624 words (each vectorises). */
static void next_state(uint32_t *mt) {
    int i;
    for (i = 0; i < N - M; i++) mt[i] = mt[i + M] ^ twist(mt[i], mt[i + 1]);
    for (; i < N - 1; i++) mt[i] = mt[i + M - N] ^ twist(mt[i], mt[i + 1]);
    mt[N - 1] = mt[M - 1] ^ twist(mt[N - 1], mt[0]);
}

static inline uint32_t temper(uint32_t y) {
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

/* n raw 32-bit outputs, as n calls of ATen's mt19937::operator() (st = [624 words, left, next]). */
static void raw(uint32_t *st, uint32_t *out, int64_t n) {
    uint32_t *mt = st;
    int64_t left = st[N], next = st[N + 1];
    while (n > 0) {
        if (left == 1) { next_state(mt); left = N + 1; next = 0; }
        int64_t k = left - 1 < n ? left - 1 : n;
        for (int64_t j = 0; j < k; j++) out[j] = temper(mt[next + j]);
        out += k; n -= k; left -= k; next += k;
    }
    st[N] = (uint32_t)left; st[N + 1] = (uint32_t)next;
}

#define BLOCK 4096

static void uniform_f(uint32_t *st, float *u, int64_t n) {
    uint32_t buf[BLOCK];
    while (n > 0) {
        int64_t k = n < BLOCK ? n : BLOCK;
        raw(st, buf, k);
        for (int64_t j = 0; j < k; j++) u[j] = (float)(buf[j] & ((1u << 24) - 1)) * (1.0f / (float)(1u << 24));
        u += k; n -= k;
    }
}

/* The uniforms of ATen normal_fill<float> for n >= 16 elements, block by block of 16 split into its two halves
   (a[8k + j] = u[16k + j], b[8k + j] = u[16k + 8 + j]): the n / 16 full blocks, then, when n % 16 != 0, the
   n % 16 uniforms past them (drawn and dropped: ATen overwrites them) and the 16 that ATen draws for its tail as
   one more block. a and b get 8 * (n / 16 + (n % 16 != 0)) each. */
void uniforms_split_f32(uint32_t *st, float *a, float *b, int64_t n) {
    float buf[BLOCK];
    int64_t blocks = n / 16, done = 0;
    while (done < blocks) {
        int64_t k = blocks - done < BLOCK / 16 ? blocks - done : BLOCK / 16;
        uniform_f(st, buf, 16 * k);
        for (int64_t i = 0; i < k; i++)
            for (int j = 0; j < 8; j++) {
                a[8 * (done + i) + j] = buf[16 * i + j];
                b[8 * (done + i) + j] = buf[16 * i + 8 + j];
            }
        done += k;
    }
    if (n % 16 != 0) {
        uniform_f(st, buf, n % 16);
        uniform_f(st, buf, 16);
        for (int j = 0; j < 8; j++) {
            a[8 * blocks + j] = buf[j];
            b[8 * blocks + j] = buf[8 + j];
        }
    }
}

/* torch.histc's counts of x (n finite elements in [lo, hi], lo < hi) added to counts[4 * bins] (four interleaved
   partial histograms, to be summed): bin = trunc((x - lo) * bins / (hi - lo)), the top edge in the last bin, the
   float operations of optim._flat._bin_index_kernel in the same order (IEEE, no contraction across the division). */
#define HIST(NAME, T)                                                                                  \
CLONES void NAME(const T *x, int64_t n, T lo, T hi, int64_t bins, int64_t *counts) {                          \
    int32_t idx[BLOCK];                                                                                \
    const T w = hi - lo, fb = (T)bins;                                                                 \
    const int32_t top = (int32_t)bins - 1;                                                             \
    for (int64_t start = 0; start < n; start += BLOCK) {                                               \
        int64_t k = n - start < BLOCK ? n - start : BLOCK;                                             \
        for (int64_t i = 0; i < k; i++) {                                                              \
            int32_t b = (int32_t)((x[start + i] - lo) * fb / w);                                       \
            idx[i] = b > top ? top : b;                                                                \
        }                                                                                              \
        int64_t i = 0;                                                                                 \
        for (; i + 4 <= k; i += 4) {                                                                   \
            counts[idx[i]]++; counts[bins + idx[i + 1]]++;                                             \
            counts[2 * bins + idx[i + 2]]++; counts[3 * bins + idx[i + 3]]++;                          \
        }                                                                                              \
        for (; i < k; i++) counts[idx[i]]++;                                                           \
    }                                                                                                  \
}
HIST(histc_f32, float)
HIST(histc_f64, double)

/* The n normals from the split cos / sin parts of uniforms_split_f32's blocks: out[16k + j] = c[8k + j],
   out[16k + 8 + j] = s[8k + j]; the tail block, if any, goes to out[n - 16 .. n - 1]. */
void interleave_f32(const float *c, const float *s, float *out, int64_t n) {
    int64_t blocks = n / 16;
    for (int64_t k = 0; k < blocks; k++)
        for (int j = 0; j < 8; j++) {
            out[16 * k + j] = c[8 * k + j];
            out[16 * k + 8 + j] = s[8 * k + j];
        }
    if (n % 16 != 0)
        for (int j = 0; j < 8; j++) {
            out[n - 16 + j] = c[8 * blocks + j];
            out[n - 8 + j] = s[8 * blocks + j];
        }
}
"""

# Offsets in the bytes of CPU `Generator.get_state()` (ATen's legacy THGeneratorState at its start).
_STATE_BYTES = 5056
_LEFT, _NEXT, _WORDS = 8, 16, 24

#: how far (absolute) a float32 normal may be from torch's: a few float32 ulp of the Box-Muller radius (<= 5.8),
#: from different log/sin/cos implementations (ATen's own vectorised ones vs inductor's)
ATOL = 4e-6

_LIB: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable in this process


def _build() -> ctypes.CDLL:
    from ._flat import compile_cache_dir

    flags = ["-O3", "-shared", "-fPIC"]  # no -march=native: a cached library may be loaded on another CPU (shared home)
    key = hashlib.sha256((_SOURCE + " ".join(flags)).encode()).hexdigest()[:16]
    out_dir = Path(compile_cache_dir()) / "optirep_normal_fill"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"mt19937_uniforms_{key}.so"
    if not lib.exists():
        cc = os.environ.get("CC", "cc")
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            src, tmp_lib = Path(tmp) / "mt19937_uniforms.c", Path(tmp) / "mt19937_uniforms.so"
            src.write_text(_SOURCE)
            subprocess.run([cc, *flags, str(src), "-o", str(tmp_lib)], check=True, capture_output=True)
            os.replace(tmp_lib, lib)  # atomic: a concurrent process never loads a half-written library
    so = ctypes.CDLL(str(lib))
    so.uniforms_split_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64]
    so.interleave_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64]
    so.uniforms_split_f32.restype = so.interleave_f32.restype = None
    so.histc_f32.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_float, ctypes.c_int64,
                             ctypes.c_void_p]
    so.histc_f64.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_double, ctypes.c_int64,
                             ctypes.c_void_p]
    so.histc_f32.restype = so.histc_f64.restype = None
    return so


def _box_muller_kernel(a, b, c, s) -> None:
    """ATen normal_fill_16 (mean 0, std 1) on the halves a = u[:8], b = u[8:] of blocks of 16 uniforms, as flat
    arrays: r = sqrt(-2 log(1 - a)), theta = float(2 pi (double) b); c = r cos theta, s = r sin theta."""
    r = torch.sqrt(-2.0 * torch.log(1.0 - a))
    theta = (b.to(torch.float64) * (2.0 * math.pi)).to(torch.float32)
    c.copy_(r * torch.cos(theta))
    s.copy_(r * torch.sin(theta))


def _self_check(so: ctypes.CDLL) -> bool:
    """Against torch on several sizes and generator positions: the generator state after the fill bit for bit (the
    same number of twister outputs), the normals to ATOL."""
    sizes = [16, 17, 31, 623, 624, 625, 1248, 5003, 40000, 5 * 16384 + 3]
    for seed in (0, 12345, 2**40 + 7):
        ga, gb = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        torch.rand(3, generator=ga), torch.rand(3, generator=gb)  # start mid-block
        xs = [torch.empty(n) for n in sizes]
        ys = [torch.empty(n) for n in sizes]
        for x in xs:
            x.normal_(generator=ga)
        _fill(so, gb, ys)
        if not torch.equal(ga.get_state(), gb.get_state()):
            return False
        if not all(torch.allclose(x, y, rtol=0.0, atol=ATOL) for x, y in zip(xs, ys)):
            return False
    return True


def _library() -> ctypes.CDLL | None:
    global _LIB
    if _LIB is None:
        try:
            so = c_library()
            _LIB = so if so is not None and _self_check(so) else False
        except Exception:  # no compiler, a failed build or load, torch.compile unavailable: torch's normal_
            _LIB = False
        if _LIB is False:
            import warnings

            warnings.warn("optirep: the fast N(0, 1) fill is unavailable or differs from torch's here; "
                          "EnhancedSGD draws its float32 noise with torch's normal_ (same numbers, slower)",
                          RuntimeWarning, stacklevel=3)
    return _LIB or None


_BUILT: ctypes.CDLL | None | bool = None


def c_library() -> ctypes.CDLL | None:
    """The compiled C helpers (built once, cached on disk), or None where there is no C compiler or the build
    failed (callers then use their torch path)."""
    global _BUILT
    if _BUILT is None:
        try:
            _BUILT = _build()
        except Exception:
            _BUILT = False
    return _BUILT or None


def histc_counts(parts: list[torch.Tensor], lo: float, hi: float, bins: int) -> torch.Tensor | None:
    """`torch.histc` counts (int64) of the contiguous CPU float32/float64 `parts` (every element finite, in
    [lo, hi], lo < hi) in one pass each: the bin index as in `optim._flat._bin_index_kernel`, counted into four
    interleaved partial histograms. None where the C helpers are not available or a part does not qualify."""
    so = c_library()
    if so is None or not all(x.device.type == "cpu" and x.is_contiguous() and x.dtype == parts[0].dtype
                             and x.dtype in (torch.float32, torch.float64) for x in parts):
        return None
    fn = so.histc_f32 if parts[0].dtype == torch.float32 else so.histc_f64
    counts = torch.zeros(4, bins, dtype=torch.int64)
    for x in parts:
        fn(x.data_ptr(), x.numel(), lo, hi, bins, counts.data_ptr())
    return counts.sum(0)


def _get(gen: torch.Generator) -> np.ndarray:
    state = gen.get_state().numpy()
    st = np.empty(626, dtype=np.uint32)
    st[:624] = state[_WORDS:_WORDS + 624 * 8].view(np.uint64)
    st[624] = state[_LEFT:_LEFT + 4].view(np.int32)[0]
    st[625] = state[_NEXT:_NEXT + 8].view(np.uint64)[0]
    return st


def _put(st: np.ndarray, gen: torch.Generator) -> None:
    raw = gen.get_state()
    state = raw.numpy()
    state[_WORDS:_WORDS + 624 * 8].view(np.uint64)[:] = st[:624]
    state[_LEFT:_LEFT + 4].view(np.int32)[0] = st[624]
    state[_NEXT:_NEXT + 8].view(np.uint64)[0] = st[625]
    gen.set_state(raw)


_SCRATCH: list[torch.Tensor] = []  # kept float32 buffers: the uniforms' two halves, the cos and sin parts


def _prefix(t: torch.Tensor, k: int) -> torch.Tensor:
    """The first k elements of the 1-D `t` as a tensor of its own (not a view: see optim._flat.alias_1d)."""
    out = t.new_empty(0)
    out.set_(t.untyped_storage(), 0, (k,), (1,))
    return out


def _fill(so: ctypes.CDLL, gen: torch.Generator, xs: list[torch.Tensor]) -> None:
    """Draw the twister's uniforms for every tensor in order (torch's `normal_` for those this fill does not
    handle, handing the generator state over), then one compiled Box-Muller pass over all of them, then put each
    tensor's normals in ATen's order."""
    fast = [x.numel() >= 16 and x.is_contiguous() and x.dtype == torch.float32 and x.device.type == "cpu"
            for x in xs]
    halves = [8 * (x.numel() // 16 + (x.numel() % 16 != 0)) if f else 0 for x, f in zip(xs, fast)]
    total = sum(halves)
    if total == 0:
        for x in xs:
            x.normal_(generator=gen)
        return
    if not _SCRATCH or _SCRATCH[0].numel() < total:
        _SCRATCH[:] = [torch.empty(total) for _ in range(4)]
    a, b, c, s = (_prefix(t, total) for t in _SCRATCH)
    st, off = None, 0
    for x, f, h in zip(xs, fast, halves):
        if f:
            if st is None:
                st = _get(gen)
            so.uniforms_split_f32(st.ctypes.data, a.data_ptr() + 4 * off, b.data_ptr() + 4 * off, x.numel())
            off += h
        else:  # torch's own path (float64, < 16 elements, ...): hand the state over and take it back
            if st is not None:
                _put(st, gen)
                st = None
            x.normal_(generator=gen)
    if st is not None:
        _put(st, gen)
    from ._base import compiled

    compiled(_box_muller_kernel)(a, b, c, s)
    off = 0
    for x, f, h in zip(xs, fast, halves):
        if f:
            so.interleave_f32(c.data_ptr() + 4 * off, s.data_ptr() + 4 * off, x.data_ptr(), x.numel())
            torch.autograd.graph.increment_version(x)
            off += h


def normal_(xs: list[torch.Tensor], gen: torch.Generator) -> None:
    """`x.normal_(generator=gen)` for each x of `xs` in order, leaving the generator in the same state: float32
    CPU tensors of >= 16 elements get the same uniforms (bit for bit) and the same transform to float32 rounding
    of log/sin/cos (where the fill is available); everything else goes through torch (the same numbers)."""
    so = None
    if gen.device.type == "cpu" and any(x.dtype == torch.float32 and x.numel() >= 16 for x in xs):
        so = _library()
    if so is None or any(x.device.type != "cpu" for x in xs):
        for x in xs:
            x.normal_(generator=gen)
        return
    _fill(so, gen, xs)
