"""Optimizer step time and state memory of every registered optimizer, against torch's fastest AdamW and SGD.

    python benchmarks/optim_step.py --device cpu --shapes resnet18 --threads 1   # or: make bench BENCH_ARGS="..."

For each parameter-shape set (torchvision ResNet-18, 11.7M parameters; a GPT-2-small stack of 12 blocks
of d=768, 85M parameters, `--embeddings` adds the 50257x768 token and 1024x768 position tables) every
candidate gets fresh parameters and fixed random gradients (N(0, 1e-3^2), the size of real gradients, which
matters for the data-dependent gains of the bio optimizers; the same tensors, cloned, for every candidate).
Only `step()` is timed: no forward or backward pass. Optimizers whose registry entry has `needs_closure`
(EnhancedSGD's Q-learning controller) are timed as `step(closure)` with a closure that returns a constant
loss tensor without recomputing anything, so their controller path is timed without the model's
forward/backward.

Candidates: every optimizer in `optirep.optim.available()` (bio optimizers on their default path; with
`--compile both` also on their foreach path, as `name[compile=False]`) and torch's AdamW (lr 1e-3, wd 1e-2)
and SGD (lr 1e-2, momentum 0.9) in each implementation torch has: `for-loop` (foreach=False), `foreach`
and `fused` (fused=True, CPU and CUDA). The fastest implementation of a family (by median) is its
reference; each optimizer's ratio is taken against the reference of its registry baseline's family (SGD
for `baseline == "sgd"`, else AdamW). The issue's targets (BiostatisV6 <= 1.5x fused AdamW, NeuroPlastic
<= 1.3x fused AdamW, EnhancedSGD with its statistics <= 4x fused SGD) are marked met or missed, never
asserted: timings on a shared machine are noisy. Next to each target, the floor of the ratio that the
algorithm itself sets (FLOORS): for BiostatisV6 and NeuroPlastic the arrays of parameter size a step must read
and write against fused AdamW's 7 (a lower bound where the step is memory-bound, as on a large model), for
EnhancedSGD its N(0, 1) noise draw alone, timed as its own interleaved row against fused SGD.

Interleaving (`--interleave`): in step mode (the default where every candidate fits in `--max-memory-gb`)
every candidate is built on its own clones of the parameters and warmed up (`--warmup` steps), then each of
`--rounds` rounds times `--repeats` steps of every candidate, one step of each in turn (a shuffled order per
round); in block mode (less memory: GPT-2 with every optimizer) each round builds one candidate at a time,
warms it up and times its `--repeats` steps. Either way a candidate's median over a round is one sample and a
ratio is computed per round against the reference's sample of the same round, so load that drifts cancels;
the table gives the median ratio over rounds and its range. The first warm-up step is reported separately
("first step"): for the compiled paths it holds the
torch.compile time, served from inductor's on-disk cache when an earlier process compiled the same kernels.

State memory = bytes of every tensor the optimizer holds in `state` (recursively, after the warm-up steps)
divided by the bytes of the parameters; Python-side controller state (EnhancedSGD's Q-table) is not tensor
memory and is not counted.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import platform
import random
import statistics
import sys
import time
from collections import deque
from typing import Any, Callable, Iterable

import torch

from optirep import optim

try:  # absent in checkouts older than the benchmark (kept runnable on them for before/after numbers)
    from optirep.optim.paths import code_path
except ImportError:  # pragma: no cover
    def code_path(opt) -> str:
        return "?"

GPT2_D, GPT2_BLOCKS, GPT2_VOCAB, GPT2_CTX = 768, 12, 50257, 1024

#: registry name -> (family, implementation the issue names, max ratio); reported, never asserted. The
#: NeuroPlastic ablations (gradonly, hybrid_*, ...) are other algorithms and carry no target.
TARGETS: dict[str, tuple[str, str, float]] = {
    "biostatis_v6": ("adamw", "fused", 1.5),
    "biostatis_v6_global": ("adamw", "fused", 1.5),
    "neuroplastic": ("adamw", "fused", 1.3),
    "enhanced_sgd": ("sgd", "fused", 4.0),
    "enhanced_sgd_noclosure": ("sgd", "fused", 4.0),
}

#: The lower bound of a targeted optimizer's ratio that its algorithm sets, reported next to the target.
#: "traffic": the arrays of parameter size a step reads plus writes on its fastest (compiled) path, against the
#: fused reference's (AdamW: reads p, g, m, v, writes p, m, v = 7): a streaming step on a large model is bound by
#: memory traffic, so the ratio cannot fall below arrays / 7 whatever the kernels. Counted from the kernels:
#:   BiostatisV6 (optim.biostatis._sensors_kernel, _apply_kernel): the gains need every tensor's sensor sums
#:     before any update, so two passes: sensors read g, m, v (3); the update reads p, g, m, v, M1, M2 and
#:     writes p, m, v, M1, M2 (11): 14.
#:   NeuroPlastic (optim.neuroplastic._traces_kernel, _classic_kernel, _apply; wd 0): the traces pass reads g, a,
#:     m, v and writes a, m, v (7); the direction u needs the traces' per-tensor means, so a second pass reads g,
#:     a, m, v and writes u (5); u's scale needs its per-tensor norm, so a third reads p, u and writes p (3): 15.
#: "noise": EnhancedSGD draws one N(0, 1) number per parameter every step (its gradient noise; torch's `normal_`
#: on the CPU generator, the numbers the reference loop draws): that draw alone is timed as its own interleaved
#: row ("noise draw") and its ratio to fused SGD is the floor.
FLOORS: dict[str, dict[str, Any]] = {
    "biostatis_v6": {"kind": "traffic", "arrays": 14, "ref_arrays": 7},
    "biostatis_v6_global": {"kind": "traffic", "arrays": 14, "ref_arrays": 7},
    "neuroplastic": {"kind": "traffic", "arrays": 15, "ref_arrays": 7},
    "enhanced_sgd": {"kind": "noise"},
    "enhanced_sgd_noclosure": {"kind": "noise"},
}
NOISE_LABEL = "noise draw (EnhancedSGD's N(0, 1) per parameter)"


class NoiseDraw:
    """EnhancedSGD's per-step noise alone: one N(0, 1) number per parameter, drawn by torch's `normal_` from a
    CPU/CUDA generator into buffers kept across steps (what the compiled path does); a timed row, not an optimizer."""

    path = "normal_"

    def __init__(self, params):
        self.bufs = [torch.empty_like(p) for p in params]
        self.state = {"noise": self.bufs}  # counted as state memory: the buffers are kept
        self.gen = torch.Generator(device=params[0].device).manual_seed(0)

    def step(self) -> None:
        for b in self.bufs:
            b.normal_(generator=self.gen)


#: torch's implementations of one update rule: label -> constructor kwargs.
IMPLS: dict[str, dict[str, bool]] = {"for-loop": {"foreach": False}, "foreach": {"foreach": True},
                                     "fused": {"fused": True}}
FAMILIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw),
    "sgd": lambda ps, **kw: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, **kw),
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


def clone_params(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        out.append(q)
    return out


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


class Candidate:
    """One timed configuration: a label, how to build it, its family (for torch rows) and its samples."""

    def __init__(self, label: str, build: Callable[[list], torch.optim.Optimizer], *, registry: str | None = None,
                 family: str | None = None, impl: str | None = None, closure: bool = False):
        self.label, self.build, self.registry, self.family, self.impl = label, build, registry, family, impl
        self.closure = closure
        self.blocks: list[float] = []      # block median per round (s)
        self.times: list[float] = []       # every timed step (s)
        self.first_step_s: float | None = None
        self.state_per_param_byte = float("nan")
        self.path = "?"
        self.reference_family: str | None = None  # rows that are neither torch's nor a registry entry's


def candidates(args) -> list[Candidate]:
    out = []
    for family, make in FAMILIES.items():
        for impl, kw in IMPLS.items():
            out.append(Candidate(f"torch {family} [{impl}]", lambda ps, m=make, k=kw: m(ps, **k),
                                 family=family, impl=impl))
    for name in args.optimizers or optim.available():
        entry = optim.spec(name)
        has_compile = "compile" in inspect.signature(entry.cls).parameters
        modes = {"auto": ["auto"], "off": [False], "both": ["auto", False]}[args.compile] if has_compile else [None]
        for mode in modes:
            hp = {} if mode is None else {"compile": mode}
            label = name if mode in (None, "auto") or args.compile == "off" else f"{name}[compile=False]"
            out.append(Candidate(label, lambda ps, n=name, h=hp: optim.build(n, ps, **h), registry=name,
                                 closure=entry.needs_closure))
    if any(FLOORS.get(c.registry, {}).get("kind") == "noise" for c in out):
        noise = Candidate(NOISE_LABEL, NoiseDraw)
        noise.reference_family = "sgd"
        out.append(noise)
    return out


class Live:
    """A candidate's optimizer on its own clones of the parameters, ready to step."""

    def __init__(self, c: Candidate, base: list[torch.nn.Parameter]):
        self.c, self.device = c, base[0].device
        self.params = clone_params(base)
        self.opt = c.build(self.params)
        const = torch.tensor(1.0, device=self.device)
        # closure candidates: no forward/backward, the controller path alone is timed
        self.closure = (lambda: const) if c.closure else None

    def step(self) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        self.opt.step(self.closure) if self.closure is not None else self.opt.step()
        _sync(self.device)
        return time.perf_counter() - t0

    def warm_up(self, n: int, first: bool) -> None:
        for i in range(n):
            dt = self.step()
            if i == 0 and first:
                self.c.first_step_s = dt

    def record_state(self) -> None:
        self.c.path = getattr(self.opt, "path", None) or code_path(self.opt)
        param_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.c.state_per_param_byte = tensor_bytes(list(self.opt.state.values())) / param_bytes

    def close(self) -> None:
        del self.opt, self.params
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def run_block(c: Candidate, base: list[torch.nn.Parameter], args, first: bool) -> None:
    """Block mode: build `c`, warm up, time `args.repeats` steps; append the block median."""
    live = Live(c, base)
    live.warm_up(args.warmup, first)
    times = [live.step() for _ in range(args.repeats)]
    c.blocks.append(statistics.median(times))
    c.times += times
    if first:
        live.record_state()
    live.close()


def run_interleaved(cands: list[Candidate], base: list[torch.nn.Parameter], args, rng: random.Random,
                    label: str) -> None:
    """Step mode: every candidate alive at once; each round times `args.repeats` steps of each, one step of
    each candidate in turn (a shuffled order per round), so that load changes within a round hit all alike."""
    lives = [Live(c, base) for c in cands]
    for live in lives:
        live.warm_up(args.warmup, first=True)
        live.record_state()
    for r in range(args.rounds):
        order = list(lives)
        rng.shuffle(order)
        times: dict[int, list[float]] = {id(v): [] for v in lives}
        for _ in range(args.repeats):
            for live in order:
                times[id(live)].append(live.step())
        for live in lives:
            live.c.blocks.append(statistics.median(times[id(live)]))
            live.c.times += times[id(live)]
        if not args.quiet:
            print(f"  [{label}] round {r + 1}/{args.rounds} done", file=sys.stderr)
    for live in lives:
        live.close()


def _ratio_summary(num: list[float], den: list[float]) -> dict[str, float]:
    r = [a / b for a, b in zip(num, den)]
    return {"ratio": statistics.median(r), "ratio_lo": min(r), "ratio_hi": max(r)}


def run_shape_set(set_name: str, args) -> dict[str, Any]:
    shapes = SHAPE_SETS[set_name](args)
    n_params = sum(math.prod(s) for s in shapes)
    base = make_params(shapes, torch.device(args.device), getattr(torch, args.dtype))
    cands = candidates(args)
    rng = random.Random(args.seed)
    # step mode holds every candidate at once: parameters, gradients and up to 5 state tensors each
    need = sum(p.numel() * p.element_size() for p in base) * 7 * len(cands)
    mode = args.interleave if args.interleave != "auto" else ("step" if need <= args.max_memory_gb * 2**30
                                                              else "block")
    if mode == "step":
        run_interleaved(cands, base, args, rng, set_name)
    else:
        for r in range(args.rounds):
            order = list(cands)
            rng.shuffle(order)
            for c in order:
                run_block(c, base, args, first=(r == 0))
                if not args.quiet and r == 0:
                    print(f"  [{set_name}] {c.label}: {c.blocks[-1] * 1e3:.3f} ms", file=sys.stderr)
            if not args.quiet:
                print(f"  [{set_name}] round {r + 1}/{args.rounds} done", file=sys.stderr)

    torch_rows = {(c.family, c.impl): c for c in cands if c.family}
    refs = {}
    for family in FAMILIES:
        impls = {impl: torch_rows[(family, impl)] for impl in IMPLS}
        best = min(impls, key=lambda k: statistics.median(impls[k].blocks))
        refs[family] = {"impl": best, "median_s": statistics.median(impls[best].blocks),
                        "all": {k: statistics.median(v.blocks) for k, v in impls.items()}}
    rows = []
    for c in cands:
        family = c.family or c.reference_family or ("sgd" if optim.spec(c.registry).baseline == "sgd" else "adamw")
        ref = torch_rows[(family, refs[family]["impl"])]
        row = {"shapes": set_name, "optimizer": c.label, "registry": c.registry, "torch_impl": c.impl,
               "path": c.path, "closure": c.closure, "reference": family, "reference_impl": refs[family]["impl"],
               "median_s": statistics.median(c.blocks), "min_s": min(c.times), "block_medians_s": c.blocks,
               "first_step_s": c.first_step_s, "state_per_param_byte": c.state_per_param_byte,
               **_ratio_summary(c.blocks, ref.blocks)}
        target = target_of(c.registry) if c.registry else None
        if target:
            tfam, timpl, tmax = target
            t = _ratio_summary(c.blocks, torch_rows[(tfam, timpl)].blocks)
            row.update(target_ref=f"{timpl} {tfam}", target_max=tmax, target_ratio=t["ratio"],
                       target_ratio_lo=t["ratio_lo"], target_ratio_hi=t["ratio_hi"],
                       target_met=t["ratio"] <= tmax)
            row.update(floor_row(c.registry, cands, torch_rows[(tfam, timpl)]))
        rows.append(row)
    del base
    gc.collect()
    return {"n_params": n_params, "n_tensors": len(shapes), "interleave": mode, "references": refs, "rows": rows}


def target_of(name: str) -> tuple[str, str, float] | None:
    return TARGETS.get(name)


def floor_row(name: str, cands: list[Candidate], target_ref: Candidate) -> dict[str, Any]:
    """The FLOORS entry of `name` as row fields: floor_kind, floor_ratio (the lower bound of the ratio to the
    target's reference) and floor_note; {} where it has none (or its noise row did not run)."""
    f = FLOORS.get(name)
    if f is None:
        return {}
    if f["kind"] == "traffic":
        return {"floor_kind": "traffic", "floor_ratio": f["arrays"] / f["ref_arrays"],
                "floor_note": f"{f['arrays']} / {f['ref_arrays']} arrays read+written per element"}
    noise = next((c for c in cands if c.label == NOISE_LABEL and c.blocks), None)
    if noise is None:
        return {}
    return {"floor_kind": "noise", "floor_ratio": _ratio_summary(noise.blocks, target_ref.blocks)["ratio"],
            "floor_note": "its N(0, 1) draw alone (measured)"}


# ----------------------------------------------------------------------------- output
def markdown(set_name: str, result: dict[str, Any]) -> str:
    refs = result["references"]
    head = (f"### {set_name}: {result['n_params']:,} parameters in {result['n_tensors']} tensors "
            f"(interleaved by {result['interleave']})\n\n"
            + "".join(f"torch {fam}: fastest is {ref['impl']} ("
                      + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in ref["all"].items()) + "). "
                      for fam, ref in refs.items()) + "\n\n")
    lines = ["| optimizer | path | closure | median step (ms) | vs fastest torch | ratio [range over rounds] "
             "| target (not asserted) | floor of the ratio | first step (s) | state bytes / param byte |",
             "|---|---|---|---:|---|---:|---|---|---:|---:|"]
    for r in result["rows"]:
        target = floor = ""
        if "target_max" in r:
            ok = "**met**" if r["target_met"] else "missed"
            target = f"<= {r['target_max']}x {r['target_ref']}: {r['target_ratio']:.2f}x, {ok}"
        if "floor_ratio" in r:
            floor = f"{r['floor_ratio']:.2f}x ({r['floor_note']})"
            if r["floor_ratio"] > r["target_max"]:
                floor += ": the target is below it"
        first = f"{r['first_step_s']:.2f}" if r["first_step_s"] is not None else ""
        lines.append(f"| {r['optimizer']} | {r['path']} | {'yes' if r['closure'] else ''} | "
                     f"{r['median_s'] * 1e3:.3f} | {r['reference_impl']} {r['reference']} | "
                     f"{r['ratio']:.2f}x [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}] | {target} | {floor} | {first} | "
                     f"{r['state_per_param_byte']:.2f} |")
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shapes", default="resnet18", choices=[*SHAPE_SETS, "all"],
                   help="parameter shapes: resnet18, gpt2, tiny (smoke test) or all (= resnet18 and gpt2)")
    p.add_argument("--embeddings", action="store_true", help="gpt2: add the token and position embeddings")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds; every candidate runs one block per round, in a shuffled order")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per block (their median is the sample)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per block first (allocate state, compile)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled candidate order")
    p.add_argument("--interleave", default="auto", choices=["auto", "step", "block"],
                   help="step: every candidate alive at once, one step of each in turn; block: one candidate at "
                        "a time per round (less memory); auto: step if it fits in --max-memory-gb")
    p.add_argument("--max-memory-gb", type=float, default=8.0,
                   help="auto: the memory step mode may use (parameters, gradients and state of every candidate)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                   help="registry names to time (default: every registered optimizer); torch's rows always run")
    p.add_argument("--json", default=None, metavar="OUT", help="write every measurement as JSON")
    p.add_argument("--quiet", action="store_true", help="no per-optimizer progress on stderr")
    p.add_argument("--compile", default="auto", choices=["auto", "off", "both"],
                   help="optimizers with a `compile` setting: their default ('auto'), their foreach path ('off'), "
                        "or both as two rows")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 1 or a.rounds < 1:
        p.error(f"--repeats, --warmup and --rounds must be >= 1 (got {a.repeats}, {a.warmup}, {a.rounds})")
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
            "threads": torch.get_num_threads(), "rounds": args.rounds, "repeats": args.repeats,
            "warmup": args.warmup, "torch": torch.__version__, "python": platform.python_version(),
            "embeddings": args.embeddings, "compile": args.compile}
    results = {s: run_shape_set(s, args) for s in sets}
    print(f"optimizer step benchmark: {meta['device']} ({device_name}), {args.dtype}, {meta['threads']} threads, "
          f"{args.rounds} interleaved rounds of {args.warmup} warm-up + {args.repeats} timed steps per candidate "
          f"(ratio: median over rounds of the block-median ratio, [min, max]), torch {torch.__version__}\n")
    for s, r in results.items():
        print(markdown(s, r))
    out = {"meta": meta, "results": results, "rows": [row for r in results.values() for row in r["rows"]]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
