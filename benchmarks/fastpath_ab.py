"""A/B of this repository's fast-path changes in one process, in CPU time (robust to other load on the machine).

    python benchmarks/fastpath_ab.py [--shapes resnet18] [--repeats 9]

On the parameter shapes of `optim_step.py`, each optimizer runs twice side by side, once with the fast path
and once with the previous code swapped back in, alternating step by step; the median `time.process_time()`
per `step()` of each is reported next to torch's fused AdamW and fused SGD (the same clock). Swapped:

* BiostatisV6 / NeuroPlastic compiled kernels: parameters as 1-D aliases (optim._flat.alias_1d) vs
  `x.view(-1)` (a view: dynamo guards on its base and replays the view per call), and for V6 |tanh g| via
  expm1 (optim._flat.abs_tanh) vs `g.tanh().abs()`;
* EnhancedSGD's 100-bin histogram: optim._flat.histc_counts (compiled bin index + bincount) vs torch.histc.

CPU time of this process only: no wait for a core, no other process's work. Reported, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optim_step import SHAPE_SETS, clone_params, make_params  # noqa: E402

import optirep.optim.biostatis as biostatis  # noqa: E402
import optirep.optim.enhanced_sgd as enhanced_sgd  # noqa: E402
import optirep.optim.neuroplastic as neuroplastic  # noqa: E402
from optirep import optim  # noqa: E402


def _view_1d(x):
    return x.view(-1) if x.is_contiguous() else x


FAST = {"alias": (biostatis.alias_1d, neuroplastic.alias_1d), "tanh": biostatis.abs_tanh,
        "hist": enhanced_sgd.histc_counts}
OLD = {"alias": (_view_1d, _view_1d), "tanh": lambda x: x.tanh().abs(), "hist": lambda *a, **k: None}


def use(code: dict) -> None:
    biostatis.alias_1d, neuroplastic.alias_1d = code["alias"]
    biostatis.abs_tanh = code["tanh"]
    enhanced_sgd.histc_counts = code["hist"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="resnet18", choices=[k for k in SHAPE_SETS if k != "all"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base = make_params(SHAPE_SETS[args.shapes](argparse.Namespace(embeddings=False)), torch.device("cpu"),
                       torch.float32)
    rows = {}
    for name, hp in (("biostatis_v6", {"diag_every": 0}), ("neuroplastic", {"diag_every": 0}),
                     ("enhanced_sgd_noclosure", {})):
        for which, code in (("new", FAST), ("old", OLD)):
            rows[(name, which)] = (optim.build(name, clone_params(base), **hp), code)
    for family, make in (("fused adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, fused=True)),
                         ("fused sgd", lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, fused=True))):
        rows[(family, "")] = (make(clone_params(base)), FAST)
    times: dict = {k: [] for k in rows}
    for i in range(args.warmup + args.repeats):
        for key, (opt, code) in rows.items():
            use(code)
            t0 = time.process_time()
            opt.step()
            if i >= args.warmup:
                times[key].append(time.process_time() - t0)
    use(FAST)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{args.shapes}: median CPU ms per step over {args.repeats} alternating steps, 1 thread, torch {torch.__version__}\n")
    print("| optimizer | fast path (ms) | previous code (ms) | change | fast / fused ref | previous / fused ref |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ref in (("biostatis_v6", "fused adamw"), ("neuroplastic", "fused adamw"),
                      ("enhanced_sgd_noclosure", "fused sgd")):
        new, old, r = med[(name, "new")], med[(name, "old")], med[(ref, "")]
        print(f"| {name} | {new:.1f} | {old:.1f} | {100 * (new / old - 1):+.0f}% | {new / r:.2f}x {ref} | "
              f"{old / r:.2f}x {ref} |")
    print(f"| fused adamw | {med[('fused adamw', '')]:.1f} | | | | |\n| fused sgd | {med[('fused sgd', '')]:.1f} | | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
