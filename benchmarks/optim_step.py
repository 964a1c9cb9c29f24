"""Optimizer step time and state memory of every registered optimizer, against torch's AdamW and SGD.

    python benchmarks/optim_step.py --device cpu --shapes resnet18 --repeats 10   # or: make bench BENCH_ARGS="..."

For each parameter-shape set (torchvision ResNet-18, 11.7M parameters; a GPT-2-small stack of 12 blocks
of d=768, 85M parameters, `--embeddings` adds the 50257x768 token and 1024x768 position tables) every
optimizer in `optirep.optim.available()` gets fresh parameters and fixed random gradients (N(0, 1e-3^2),
the size of real gradients, which matters for the data-dependent gains of the bio optimizers), runs
`--warmup` steps, then `--repeats` timed `step()` calls; the median is reported. Only `step()` is timed:
no forward or backward pass. Optimizers whose registry entry has `needs_closure` (EnhancedSGD's Q-learning
controller) are timed as `step(closure)` with a closure that returns a constant loss tensor without
recomputing anything, so their controller path is timed without the model's forward/backward.

BiostatisV6 and NeuroPlastic run with their default `compile="auto"`: on these shapes (>= 2^20 elements)
that is their fused torch.compile path, compiled during `--warmup` (seconds with a warm on-disk cache, tens of
seconds cold); `--compile off` times their foreach path instead.

Baselines: torch.optim.AdamW and torch.optim.SGD(momentum=0.9), each timed in its foreach and its
for-loop implementation in the same process; the faster one is the reference (the table says which).
Each optimizer's ratio is against AdamW, or against SGD-momentum when its registry baseline is "sgd"
(`optim.spec(name).baseline`). The issue's targets (BiostatisV6 <= 1.5x AdamW, NeuroPlastic <= 1.3x AdamW,
EnhancedSGD <= 1.1x SGD) are shown in a column, not asserted: timings on a shared machine are noisy.
State memory = bytes of every tensor the optimizer holds in `state` (recursively, after warm-up and the
timed steps) divided by the bytes of the parameters; Python-side controller state (EnhancedSGD's Q-table)
is not tensor memory and is not counted.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import platform
import statistics
import sys
import time
from collections import deque
from typing import Any, Callable, Iterable

import torch

from optirep import optim

GPT2_D, GPT2_BLOCKS, GPT2_VOCAB, GPT2_CTX = 768, 12, 50257, 1024

#: name prefix -> (reference, max ratio) from the issue; informational only.
TARGETS: dict[str, tuple[str, float]] = {
    "biostatis_v6": ("adamw", 1.5),
    "neuroplastic": ("adamw", 1.3),
    "enhanced_sgd": ("sgd", 1.1),
}


# ----------------------------------------------------------------------------- parameter shapes
def resnet18_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's ResNet-18 (1000 classes, 11,689,512 parameters)."""
    import torchvision

    return [tuple(p.shape) for p in torchvision.models.resnet18(weights=None).parameters()]


def gpt2_shapes(embeddings: bool = False) -> list[tuple[int, ...]]:
    """GPT-2 small's block parameters (HF Conv1D layout, [in, out]), 12 blocks + final LayerNorm.

    85,056,000 parameters; with `embeddings`, + wte (50257x768, tied to the LM head) and wpe (1024x768).
    """
    d = GPT2_D
    block = [(d,), (d,),                       # ln_1 weight, bias
             (d, 3 * d), (3 * d,),             # attn.c_attn (fused qkv)
             (d, d), (d,),                     # attn.c_proj
             (d,), (d,),                       # ln_2
             (d, 4 * d), (4 * d,),             # mlp.c_fc
             (4 * d, d), (d,)]                 # mlp.c_proj
    shapes = block * GPT2_BLOCKS + [(d,), (d,)]  # + ln_f
    if embeddings:
        shapes = [(GPT2_VOCAB, d), (GPT2_CTX, d)] + shapes
    return shapes


def tiny_shapes() -> list[tuple[int, ...]]:
    """A few small tensors (smoke test): a matrix, a bias, a conv kernel, a scalar-like vector."""
    return [(8, 4), (4,), (3, 2, 3, 3), (1,)]


SHAPE_SETS: dict[str, Callable[[argparse.Namespace], list[tuple[int, ...]]]] = {
    "resnet18": lambda a: resnet18_shapes(),
    "gpt2": lambda a: gpt2_shapes(a.embeddings),
    "tiny": lambda a: tiny_shapes(),
}


# ----------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_params(shapes: Iterable[tuple[int, ...]], device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> list[torch.nn.Parameter]:
    """Parameters ~ N(0, 0.02^2) with fixed gradients ~ N(0, 1e-3^2), the same for every optimizer."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter((torch.randn(shape, generator=g) * 0.02).to(device=device, dtype=dtype))
        p.grad = (torch.randn(shape, generator=g) * 1e-3).to(device=device, dtype=dtype)
        params.append(p)
    return params


def tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of every distinct tensor reachable through dicts, lists, tuples and deques."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, deque)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def time_steps(opt: torch.optim.Optimizer, device: torch.device, warmup: int, repeats: int,
               closure: Callable[[], torch.Tensor] | None) -> list[float]:
    """Seconds per `step()` for `repeats` steps after `warmup` untimed ones (synchronised on CUDA)."""
    def step():
        return opt.step(closure) if closure is not None else opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure(build: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], shapes, args,
            needs_closure: bool = False) -> dict[str, Any]:
    """Median step time and state bytes / parameter bytes of one optimizer on fresh parameters."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    params = make_params(shapes, device, dtype)
    opt = build(params)
    closure = None
    if needs_closure:
        const = torch.tensor(1.0, device=device)
        closure = lambda: const  # noqa: E731 - no forward/backward: the controller path alone is timed
    times = time_steps(opt, device, args.warmup, args.repeats, closure)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    state = tensor_bytes(list(opt.state.values()))
    out = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
           "state_bytes": state, "param_bytes": param_bytes, "state_per_param_byte": state / param_bytes}
    del opt, params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def baselines(shapes, args, earlier: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """torch AdamW and SGD-momentum, foreach and for-loop; the faster implementation is the reference.

    Called before and after the other optimizers (`earlier` = the first pass): on a loaded machine the
    lower of the two medians per implementation is the less disturbed one.
    """
    kinds = {"adamw": lambda ps, fe: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, foreach=fe),
             "sgd": lambda ps, fe: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=fe)}
    out = {}
    for name, make in kinds.items():
        impls = {impl: measure(lambda ps: make(ps, fe), shapes, args)
                 for impl, fe in (("foreach", True), ("for-loop", False))}
        if earlier:
            for impl, m in earlier[name]["passes"].items():
                if m["median_s"] < impls[impl]["median_s"]:
                    impls[impl] = m
        best = min(impls, key=lambda k: impls[k]["median_s"])
        out[name] = {**impls[best], "impl": best, "all": {k: v["median_s"] for k, v in impls.items()},
                     "passes": impls}
    return out


def reference_of(name: str) -> str:
    """The baseline a ratio is taken against: SGD-momentum for sgd-type entries, else AdamW."""
    return "sgd" if optim.spec(name).baseline == "sgd" else "adamw"


def target_of(name: str) -> tuple[str, float] | None:
    for prefix, target in TARGETS.items():
        if name.startswith(prefix):
            return target
    return None


def run_shape_set(set_name: str, args) -> dict[str, Any]:
    shapes = SHAPE_SETS[set_name](args)
    n_params = sum(math.prod(s) for s in shapes)
    base = baselines(shapes, args)
    rows = []
    names = args.optimizers or optim.available()
    for name in names:
        entry = optim.spec(name)
        hp = ({"compile": "auto" if args.compile == "auto" else False}
              if "compile" in inspect.signature(entry.cls).parameters else {})
        m = measure(lambda ps: optim.build(name, ps, **hp), shapes, args, needs_closure=entry.needs_closure)
        ref = reference_of(name)
        row = {"shapes": set_name, "optimizer": name, "registry_baseline": entry.baseline, "reference": ref,
               "closure": entry.needs_closure, "median_s": m["median_s"], "min_s": m["min_s"],
               "ratio": m["median_s"] / base[ref]["median_s"],
               "state_per_param_byte": m["state_per_param_byte"], "state_bytes": m["state_bytes"]}
        target = target_of(name)
        if target:
            tref, tmax = target
            row.update(target_ref=tref, target_max=tmax, target_ratio=m["median_s"] / base[tref]["median_s"])
        rows.append(row)
        if not args.quiet:
            print(f"  [{set_name}] {name}: {m['median_s'] * 1e3:.3f} ms", file=sys.stderr)
    base = baselines(shapes, args, earlier=base)
    for row in rows:  # ratios against the less disturbed of the two baseline passes
        row["ratio"] = row["median_s"] / base[row["reference"]]["median_s"]
        if "target_ref" in row:
            row["target_ratio"] = row["median_s"] / base[row["target_ref"]]["median_s"]
    return {"n_params": n_params, "n_tensors": len(shapes),
            "baselines": {k: {kk: vv for kk, vv in v.items() if kk not in ("times_s", "passes")}
                          for k, v in base.items()},
            "rows": rows}


# ----------------------------------------------------------------------------- output
def markdown(set_name: str, result: dict[str, Any]) -> str:
    b = result["baselines"]
    head = (f"### {set_name}: {result['n_params']:,} parameters in {result['n_tensors']} tensors\n\n"
            f"torch AdamW: {b['adamw']['median_s'] * 1e3:.3f} ms ({b['adamw']['impl']}; "
            + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in b["adamw"]["all"].items()) + "), "
            f"state {b['adamw']['state_per_param_byte']:.2f} B/B. "
            f"torch SGD-momentum: {b['sgd']['median_s'] * 1e3:.3f} ms ({b['sgd']['impl']}; "
            + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in b["sgd"]["all"].items()) + "), "
            f"state {b['sgd']['state_per_param_byte']:.2f} B/B.\n\n")
    lines = ["| optimizer | closure | median step (ms) | vs | ratio | target (not asserted) | state bytes / param byte |",
             "|---|---|---:|---|---:|---|---:|"]
    for r in result["rows"]:
        target = ""
        if "target_max" in r:
            ok = "met" if r["target_ratio"] <= r["target_max"] else "missed"
            target = f"<= {r['target_max']}x {r['target_ref']} ({r['target_ratio']:.2f}x, {ok})"
        lines.append(f"| {r['optimizer']} | {'yes' if r['closure'] else ''} | {r['median_s'] * 1e3:.3f} | "
                     f"{r['reference']} | {r['ratio']:.2f}x | {target} | {r['state_per_param_byte']:.2f} |")
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shapes", default="resnet18", choices=[*SHAPE_SETS, "all"],
                   help="parameter shapes: resnet18, gpt2, tiny (smoke test) or all (= resnet18 and gpt2)")
    p.add_argument("--embeddings", action="store_true", help="gpt2: add the token and position embeddings")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per optimizer (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocate state, warm caches)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                   help="registry names to time (default: every registered optimizer)")
    p.add_argument("--json", default=None, metavar="OUT", help="write every measurement as JSON")
    p.add_argument("--quiet", action="store_true", help="no per-optimizer progress on stderr")
    p.add_argument("--compile", default="auto", choices=["auto", "off"],
                   help="optimizers with a `compile` setting: their default ('auto': fused torch.compile kernels "
                        "for groups of >= 2^20 elements; the warm-up steps absorb the compile) or 'off' (foreach)")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0:
        p.error(f"--repeats must be >= 1 and --warmup >= 0 (got {a.repeats}, {a.warmup})")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    if a.optimizers:
        unknown = [n for n in a.optimizers if n not in optim.REGISTRY]
        if unknown:
            p.error(f"--optimizers: unknown {unknown} (known: {', '.join(optim.available())})")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = ["resnet18", "gpt2"] if args.shapes == "all" else [args.shapes]
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else platform.processor() or platform.machine())
    meta = {"device": args.device, "device_name": device_name, "dtype": args.dtype,
            "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
            "torch": torch.__version__, "python": platform.python_version(), "embeddings": args.embeddings}
    results = {s: run_shape_set(s, args) for s in sets}
    print(f"optimizer step benchmark: {meta['device']} ({device_name}), {args.dtype}, "
          f"{meta['threads']} threads, median of {args.repeats} steps after {args.warmup} warm-up, torch {torch.__version__}\n")
    for s, r in results.items():
        print(markdown(s, r))
    out = {"meta": meta, "results": results, "rows": [row for r in results.values() for row in r["rows"]]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
