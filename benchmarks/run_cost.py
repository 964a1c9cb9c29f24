"""Seconds per run of experiment tasks, measured on a short real run and extrapolated to the whole run.

    python benchmarks/run_cost.py experiments/cpu_neuroplastic_fmnist.yaml --steps 300 [--task T] [--label L]
        [--mirror ../shared/datasets] [--threads 1] [--json OUT]

For each (task, label) it trains `--steps` optimizer steps through the real training loop
(`optirep.train.train`: real data, the task's model, batch size and optimizer) with a validation
eval half-way and one at the end, times the second half (after compilation and warm-up), then extrapolates the task's planned run: planned steps x (training seconds per
step) + (evals + final val/test) x (seconds per validation-sized eval, scaled to the test split) +
start-up (data load, model build) + the first half's warm-up excess (`warmup_s`, e.g. torch.compile).
Timings depend on the machine's load: each row also gives the share of a core the process
got (CPU seconds / wall seconds) and the load average, so a run on a loaded machine can be told
from a slow one. This sizes a study; it asserts nothing.
Labels default to the first of each task (pass --label, repeatable, for others).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from optirep import config
from optirep import data as datalib
from optirep.train import train


def measure(cfg: dict, source: str, task: str, label: str, steps: int, mirror: str | None,
            threads: int) -> dict:
    run = config.resolve_run(cfg, task, label, seed=0, source=source)
    run = copy.deepcopy(run)
    run["device"], run["threads"] = "cpu", threads
    t = run["task"]
    t.pop("epochs", None)
    planned_epochs = cfg["tasks"][task].get("epochs")
    # two evals: the steps after the first (compilation, warm-up and allocation happen before it) are timed
    t["steps"], t["eval_every"] = steps, steps // 2
    t["features"] = 0
    info = datalib.load(t["dataset"], mirror=mirror, seed=0, **t.get("data_args", {})).info
    with tempfile.TemporaryDirectory(prefix="optirep-cost-") as d:
        t0, c0 = time.perf_counter(), time.process_time()
        rec = train(run, Path(d) / "run", mirror=mirror, quiet=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = [json.loads(line) for line in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    per_step = (last["wall_time_s"] - first["wall_time_s"]) / max(last["step"] - first["step"], 1)
    warmup = max(0.0, first["wall_time_s"] - per_step * first["step"])
    # CPU seconds the process got over wall seconds: below 1 when other processes share the core
    share = min(1.0, cpu / wall) if wall > 0 else 1.0
    rest = wall - rec["wall_time_s"]  # load + build + 4 evals (two val in the loop, final test and val)
    n_train, n_val, n_test = info.get("n_train"), info.get("n_val"), info.get("n_test")
    bs = cfg["tasks"][task]["batch_size"]
    if planned_epochs:
        spe = max(1, n_train // bs) if n_train and n_train >= bs else 1
        planned = planned_epochs * spe if n_train else None
    else:
        planned = cfg["tasks"][task]["steps"]
    evals = len(range(0, planned or 0, cfg["tasks"][task].get("eval_every") or max(1, (planned or 10) // 10))) + 2
    return {"task": task, "label": label, "measured_steps": rec["steps"], "s_per_step": per_step,
            "s_outside_steps": rest, "planned_steps": planned, "planned_evals": evals,
            # the 4 measured evals (3 val-sized, 1 test-sized) stand in for `evals` of them: an upper bound
            "est_run_s": None if planned is None else planned * per_step + warmup + rest * max(1.0, evals / 4),
            "warmup_s": warmup,
            "core_share": share,
            "n_train": n_train, "n_val": n_val, "n_test": n_test}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--task", action="append", default=None)
    ap.add_argument("--label", action="append", default=None)
    ap.add_argument("--mirror", default=os.environ.get("OPTIREP_DATA_MIRROR"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    rows = []
    for task in a.task or list(cfg["tasks"]):
        for label in a.label or cfg["tasks"][task]["optimizers"][:1]:
            if label not in cfg["tasks"][task]["optimizers"]:
                continue
            r = measure(cfg, str(a.experiment), task, label, a.steps, a.mirror, a.threads)
            rows.append(r)
            est = f"{r['est_run_s']:.0f}" if r["est_run_s"] is not None else "?"
            print(f"{cfg['name']}/{task}/{label}: {r['s_per_step'] * 1e3:.1f} ms/step over {r['measured_steps']} steps, "
                  f"{r['s_outside_steps']:.1f} s outside steps; planned {r['planned_steps']} steps -> ~{est} s/run "
                  f"(the process got {r['core_share']:.0%} of a core; load {os.getloadavg()[0]:.1f})", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"experiment": cfg["name"], "threads": a.threads, "load": os.getloadavg(),
                                      "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
