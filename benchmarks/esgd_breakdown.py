"""Where EnhancedSGD's step time goes: its statistics and noise against an SGD-momentum step.

    python benchmarks/esgd_breakdown.py [--shapes resnet18] [--repeats 5] [--threads 1]

On the parameter shapes of `optim_step.py` with N(0, 1e-3^2) gradients, times (median ms) each piece
EnhancedSGD's seed defines: concatenating every gradient, the variance, the 100-bin histogram that
feeds its entropy (`torch.histc`, a `bincount` alternative and the optimizer's `histc_counts`), the
N(0, s^2) noise draw (fresh `randn` and torch's `normal_` into kept buffers), and whole
`step()`s of `enhanced_sgd_noclosure` with mechanisms switched off one by one, next to torch's
SGD-momentum. Reported, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optim_step import SHAPE_SETS  # noqa: E402

from optirep import optim  # noqa: E402
from optirep.optim._flat import histc_counts  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="resnet18", choices=[k for k in SHAPE_SETS if k != "all"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    shapes = SHAPE_SETS[args.shapes](argparse.Namespace(embeddings=False))
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    lo, hi = (float(x) for x in torch.aminmax(flat))
    noise_gen = torch.Generator().manual_seed(1)
    kept = [torch.empty_like(g) for g in grads]
    grads_1d = [g.reshape(-1) for g in grads]

    def bincount():
        idx = ((flat - lo) * (100 / (hi - lo))).clamp_(0, 99).to(torch.int32)
        return torch.bincount(idx, minlength=100)

    rows = [
        ("cat of every gradient", lambda: torch.cat([g.reshape(-1) for g in grads])),
        ("variance (flat)", lambda: flat.var()),
        ("per-tensor sums (fast-path variance)", lambda: [(g.sum(), (g * g).sum()) for g in grads]),
        ("histc, 100 bins (seed's entropy)", lambda: torch.histc(flat, 100, lo, hi)),
        ("bincount, 100 bins", bincount),
        ("randn noise, one draw per element", lambda: torch.randn(flat.shape, generator=noise_gen)),
        ("normal_ into kept buffers, per tensor", lambda: [x.normal_(generator=noise_gen) for x in kept]),
        ("optim._flat.histc_counts (compiled bin-index pass + bincount)",
         lambda: histc_counts(grads_1d, torch.tensor(lo), torch.tensor(hi), 100)),
    ]
    steps = [("sgd", {"lr": 0.01, "momentum": 0.9}), ("enhanced_sgd_noclosure", {}),
             ("enhanced_sgd_noclosure", {"grad_retention": False}),
             ("enhanced_sgd_noclosure", {"grad_retention": False, "apply_noise": False})]
    print(f"{args.shapes}: {flat.numel():,} parameters in {len(grads)} tensors, {args.threads} thread(s), "
          f"torch {torch.__version__}\n")
    print("| piece | median ms |\n|---|---:|")
    for name, fn in rows:
        print(f"| {name} | {median_ms(fn, args.repeats):.1f} |")
    for name, hp in steps:
        opt = optim.build(name, params, **hp)
        print(f"| `{name}` step {hp or ''} | {median_ms(opt.step, args.repeats):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
