"""The timing stage: per-step cost of a task's optimizers, interleaved in one process (what timing claims use).

    optirep timing --experiment experiments/cpu_vision_fmnist.yaml --task resnet18_fmnist32 \
        --optimizers adamw_published 'adamw_published[fused=true]' biostatis_v6_published \
                     'biostatis_v6_published[foreach=false]' \
        --out results/cpu_vision_fmnist/timing/resnet18_fmnist32.json [--repeats 30] [--warmup 5]

The workflow runs it for every (experiment, task) under its config's `timing:` key (Snakemake rule `timing`,
DVC stage `timing@<exp>-<task>`).

The training runs' `time_per_step_s` cannot carry a claim of "+23-67% time": each run is its own process
(other jobs share the machine, the compile and allocator warm-up differ), and runs of two labels may come
from different commits. This stage measures instead, in one process and one commit:

* every entry of `--optimizers` (an *arm*; the first is the baseline) gets its own model from the same
  initial weights (seed = the experiment's first seed) and its optimizer built from the label's declared
  hyperparameters (a tuned label's search result is not needed: the cost of a step does not depend on the
  values of lr or weight decay);
* an entry may be a *variant* `label[key=value,...]` (values are YAML: `adamw_published[fused=true]`,
  `biostatis_v6_published[foreach=false]`): the label's run with those optimizer hyperparameters
  overridden, checked like any hp (a key the optimizer class does not take is an error naming the entry,
  the key and the allowed names). This is how one label is timed on several code paths: torch's AdamW at
  its default path (the for-loop on CPU, foreach on CUDA: what a seed script ran) and `fused=True` (torch's
  fastest), optirep's bio optimizers at their default fast path (compile="auto") and on the reference
  per-parameter loop (`foreach=False`: the seed's own code). Timing claims use both pairs: the seed's code
  paths for question (a), the fastest path of each for question (b) (experiments/claims.yaml);
* the labels take turns one training step at a time (batch, forward, backward, [clip,] `optimizer.step()`,
  the training loop's exact step), in the order A B, B A, A B, ... so that load drifting during the
  measurement hits both alike; every label sees the same batch at the same repeat;
* `--warmup` rounds are run first and reported but not summarised (state allocation, torch.compile of
  the fused kernels, first-touch page faults);
* `--repeats` timed rounds (>= 20 for a claim) give, per label, the median and a distribution-free 95%
  interval of the median (order statistics of the binomial, scipy.stats.binom) of the whole step and of
  `optimizer.step()` alone (for closure optimizers the closure's forward/backward is inside the step and
  the record says so), and per label the median and interval of the per-round paired ratio to the baseline;
* the record names the code path of each optimizer (optirep.optim.paths.code_path: fused / foreach /
  compiled / for-loop / reference), the hardware (device name, threads), torch version and git commit.
  `per_label` is keyed by the entry as given (the variant string), each with its `label` and `overrides`.

Output: one JSON file per task (written atomically). Reported, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: the fewest timed repeats a record needs to carry a claim (issue #12); fewer are labelled as such.
MIN_REPEATS_FOR_CLAIM = 20


def median_interval(xs: list[float], level: float = 0.95) -> dict[str, float]:
    """Median of `xs` and a distribution-free `level` interval for the population median.

    The interval is [x_(k), x_(n-k+1)] with the largest k such that P(k <= B < n - k + 1) >= level for
    B ~ Binomial(n, 1/2) (e.g. Conover, Practical Nonparametric Statistics, 3rd ed., sec. 3.2); with too
    few samples for any such k it is the sample range, and `covered` says the level actually reached.
    """
    from scipy.stats import binom

    x = sorted(xs)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval: no samples")
    k_best, cover = 1, 1.0 - 2 * binom.cdf(0, n, 0.5)
    for k in range(1, n // 2 + 1):
        c = binom.cdf(n - k, n, 0.5) - binom.cdf(k - 1, n, 0.5)
        if c >= level:
            k_best, cover = k, c
        else:
            break
    return {"median": statistics.median(x), "lo": x[k_best - 1], "hi": x[n - k_best], "n": n,
            "level": level, "covered": float(cover)}


def _hardware(device) -> dict[str, Any]:
    import torch

    from optirep.train import device_name

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device": device_name(device), "cpu": cpu, "threads": torch.get_num_threads(),
            "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


class _Contender:
    """One arm (a label or a label variant): its model, optimizer and the training loop's step."""

    def __init__(self, entry: str, overrides: dict, run: dict, objective, splits, device, seed: int,
                 source: str = "<experiment>"):
        import torch

        from optirep import optim
        from optirep.config import ConfigError
        from optirep.train import build_model

        self.label, self.overrides, self.run = entry, overrides, run
        torch.manual_seed(seed)
        self.model = build_model(run["task"], splits, device)
        self.model.train()
        o = run["optimizer"]
        try:
            self.opt = optim.build(o["name"], self.model.parameters(), **o["hp"])
        except (ValueError, RuntimeError, TypeError) as exc:  # e.g. torch: fused=True with foreach=True
            raise ConfigError(f"{source}: {entry!r}: the optimizer {o['name']} refuses these hyperparameters "
                              f"({exc})") from None
        self.closure_opt = bool(o.get("closure"))
        self.objective, self.device, self.task = objective, device, run["task"]
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(self.task.get("bf16")))
        self.step_s: list[float] = []
        self.opt_step_s: list[float] = []

    def step(self, k: int) -> tuple[float, float]:
        """One training step on batch `k`; (whole step, optimizer.step()) in seconds."""
        import torch

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        spe = self.objective.steps_per_epoch()
        if k % spe == 0 and hasattr(self.opt, "set_epoch"):
            self.opt.set_epoch(k // spe + 1)
        sync()
        t0 = time.perf_counter()
        batch = self.objective.batch(k)

        def closure():
            self.opt.zero_grad(set_to_none=True)
            with self.autocast:
                loss = self.objective.loss(self.model, batch)
            loss.backward()
            return loss

        if self.closure_opt:
            t1 = time.perf_counter()
            loss = self.opt.step(closure)
        else:
            loss = closure()
            if self.task.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.task["grad_clip"])
            sync()
            t1 = time.perf_counter()
            self.opt.step()
        sync()
        t2 = time.perf_counter()
        if hasattr(self.objective, "after_step"):
            self.objective.after_step()
        float(loss.detach())  # the loss reaches the host every step here (the training loop batches these syncs)
        return t2 - t0, t2 - t1


def check_entries(cfg: dict, task: str, entries: list[str], source: str = "<experiment>") -> list[tuple[str, dict]]:
    """(label, overrides) of each `--optimizers` entry (config.check_variant), refusing fewer than two
    entries and two entries that name the same arm (`adamw` twice, or `a[x=1,y=2]` and `a[y=2, x=1]`)."""
    from optirep import config

    if len(entries) < 2:
        raise config.ConfigError(f"{source}: timing of task {task!r} needs at least two optimizer labels "
                                 f"(the baseline first), got {list(entries)}")
    parsed = [config.check_variant(cfg, task, e, source) for e in entries]
    for i, p in enumerate(parsed):
        for j in range(i):
            if parsed[j] == p:
                raise config.ConfigError(f"{source}: entries {entries[j]!r} and {entries[i]!r} are the same arm "
                                         f"(label and hyperparameters); give each once")
    return parsed


def measure(cfg: dict, task: str, labels: list[str], repeats: int, warmup: int, overrides: list[str] = (),
            data_root: str | None = None, mirror: str | None = None, source: str = "<experiment>",
            quiet: bool = False) -> dict[str, Any]:
    """Interleaved timing of `labels` (the first is the baseline) on `task`; the record as a dict.

    Each entry of `labels` is a label of the task or a variant `label[key=value,...]` (config.parse_variant):
    the label's run with those optimizer hyperparameters overridden. Raises ConfigError (naming the entry,
    the key and the allowed values) before any data is loaded when an entry is not valid.
    """
    import torch

    from optirep import config
    from optirep import data as datalib
    from optirep.optim.paths import code_path
    from optirep.train import OBJECTIVES, git_sha, pick_device, versions

    labels = list(labels)
    parsed = check_entries(cfg, task, labels, source)
    seed = cfg["seeds"][0]
    runs = [config.resolve_run(cfg, task, label, seed, list(overrides), hp_override=hp or None, source=source)
            for label, hp in parsed]
    t = runs[0]["task"]
    if runs[0].get("threads"):
        torch.set_num_threads(int(runs[0]["threads"]))
    device = pick_device(runs[0]["device"])
    splits = datalib.load(t["dataset"], root=data_root, mirror=mirror, seed=seed, **t.get("data_args", {}))
    objective = OBJECTIVES[t["objective"]](copy.deepcopy(t), splits, device, seed)
    contenders = [_Contender(e, hp, r, objective, splits, device, seed, source)
                  for e, (_, hp), r in zip(labels, parsed, runs)]

    warm: dict[str, list[float]] = {c.label: [] for c in contenders}
    for r in range(warmup + repeats):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            step_s, opt_s = c.step(r)
            if r < warmup:
                warm[c.label].append(step_s)
            else:
                c.step_s.append(step_s)
                c.opt_step_s.append(opt_s)
        if not quiet and (r + 1) % 10 == 0:
            print(f"timing {task}: round {r + 1}/{warmup + repeats}", file=sys.stderr)
    # after the steps: compile="auto" probes torch.compile on the first step
    paths = {c.label: code_path(c.opt) for c in contenders}

    base = contenders[0]
    per_label = {}
    for c in contenders:
        per_label[c.label] = {
            "label": c.run["label"], "overrides": c.overrides,
            "optimizer": c.run["optimizer"]["name"], "hp": c.run["optimizer"]["resolved_hp"],
            "code_path": paths[c.label], "opt_step_includes_closure": c.closure_opt,
            "step_s": median_interval(c.step_s), "opt_step_s": median_interval(c.opt_step_s),
            "ratio_step": median_interval([a / b for a, b in zip(c.step_s, base.step_s)]),
            "ratio_opt_step": median_interval([a / b for a, b in zip(c.opt_step_s, base.opt_step_s)]),
            "warmup_step_s": warm[c.label], "times_step_s": c.step_s, "times_opt_step_s": c.opt_step_s,
        }
    return {
        "kind": "optirep timing record", "experiment": cfg["name"], "scale": cfg["scale"], "task": task,
        "baseline": base.label, "labels": labels, "repeats": repeats, "warmup": warmup, "seed": seed,
        "order": "interleaved A B / B A by round, one training step each",
        "enough_for_claim": repeats >= MIN_REPEATS_FOR_CLAIM, "min_repeats_for_claim": MIN_REPEATS_FOR_CLAIM,
        "per_label": per_label, "hardware": _hardware(device), "versions": versions(), "git_sha": git_sha(),
        "overrides": list(overrides),
    }


def markdown(rec: dict[str, Any]) -> str:
    """The record as a small table (for logs and the report)."""
    lines = [f"timing {rec['experiment']}/{rec['task']} ({rec['scale']}; {rec['hardware']['device']}), "
             f"median [95% interval] of {rec['repeats']} interleaved rounds after {rec['warmup']} warm-up",
             "", "| label | optimizer | path | step (ms) | optimizer.step() (ms) | step / baseline | "
             "opt step / baseline |", "|---|---|---|---:|---:|---:|---:|"]

    def ms(s):
        return f"{s['median'] * 1e3:.2f} [{s['lo'] * 1e3:.2f}, {s['hi'] * 1e3:.2f}]"

    def x(s):
        return f"{s['median']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"

    for label, r in rec["per_label"].items():
        lines.append(f"| {label} | {r['optimizer']} | {r['code_path']} | {ms(r['step_s'])} | {ms(r['opt_step_s'])} "
                     f"| {x(r['ratio_step'])} | {x(r['ratio_opt_step'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from optirep import config
    from optirep.train import atomic_write_json

    p = argparse.ArgumentParser(prog="optirep timing", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True, help="experiments/X.yaml")
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, type=Path, help="the JSON record to write")
    p.add_argument("--optimizers", nargs="+", required=True, metavar="LABEL",
                   help="optimizer labels of the task to time, the baseline first (at least two); an entry "
                        "label[key=value,...] is that label with optimizer hyperparameters overridden, e.g. "
                        "'adamw[fused=true]' (quote it for the shell)")
    p.add_argument("--repeats", type=int, default=30,
                   help=f"timed rounds (default 30; a record carries a claim from {MIN_REPEATS_FOR_CLAIM} on)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every label's run config, e.g. task.batch_size=32 (repeatable)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--mirror", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    if a.repeats < 1 or a.warmup < 0:
        p.error(f"--repeats must be >= 1 and --warmup >= 0 (got {a.repeats}, {a.warmup})")
    cfg = config.load_experiment(a.experiment)
    check_entries(cfg, a.task, a.optimizers, a.experiment)  # before loading any data
    rec = measure(cfg, a.task, a.optimizers, a.repeats, a.warmup, a.set, a.data_root, a.mirror, a.experiment,
                  a.quiet)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, rec)
    print(markdown(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
