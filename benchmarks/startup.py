"""Job start-up of `optirep train`: one process per run vs one process for all seeds, and a finished rerun.

    python benchmarks/startup.py                                   # cpu_lowdata's mlp_mnist1d_frac10, sgd, 5 seeds
    python benchmarks/startup.py --seeds 0 1 2 --repeats 3 --compare-src /tmp/old/src --json startup.json

Each repeat runs, in this order (interleaved, so that load drift on a shared machine hits every mode):

  per-run    one `optirep train` process per seed, one after the other (the workflow's default rule)
  batched    one `optirep train` process with every `--seed S --out D` pair (rules/batch.smk)
  finished   one process rerunning one finished run directory (reports "already finished")

`--compare-src DIR` adds the per-run and finished modes with another source tree on PYTHONPATH (for
example the code before a change, from `git archive <rev> | tar -x -C DIR/..`). Wall times are measured
around each subprocess (start-up, data, training, outputs); the table shows medians over the repeats
and the ratio to per-run. Reported, never asserted: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _optirep(src: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optirep", "train", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default=str(ROOT / "experiments" / "cpu_lowdata.yaml"))
    p.add_argument("--task", default="mlp_mnist1d_frac10")
    p.add_argument("--optimizer", default="sgd", help="a label without tuning (no --hp-json needed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--mirror", default=None, help="dataset mirror (optirep train --mirror), e.g. ../shared/datasets")
    p.add_argument("--compare-src", type=Path, default=None, help="another source tree (its src/ directory)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    base = ["--experiment", a.experiment, "--task", a.task, "--optimizer", a.optimizer, "--quiet"]
    if a.mirror:
        base += ["--mirror", str(Path(a.mirror).resolve())]
    srcs = {"": ROOT / "src"}
    if a.compare_src is not None:
        srcs[" (compare-src)"] = a.compare_src.resolve()
    times: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="optirep-startup-"))
    try:
        for r in range(a.repeats):
            for tag, src in srcs.items():
                d = work / f"r{r}{tag.strip(' ()')}"
                per_run = sum(_optirep(src, [*base, "--seed", str(s), "--out", str(d / f"p{s}")]) for s in a.seeds)
                times.setdefault(f"per-run{tag}", []).append(per_run)
                if not tag:
                    pairs = [x for s in a.seeds for x in ("--seed", str(s), "--out", str(d / f"b{s}"))]
                    times.setdefault("batched", []).append(_optirep(src, [*base, *pairs]))
                s0 = a.seeds[0]
                times.setdefault(f"finished{tag}", []).append(
                    _optirep(src, [*base, "--seed", str(s0), "--out", str(d / f"p{s0}")]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ref = statistics.median(times["per-run"])
    print(f"optirep train start-up: {a.task}/{a.optimizer}, {len(a.seeds)} seeds, median of {a.repeats} "
          f"interleaved repeats, load {os.getloadavg()[0]:.1f}")
    print(f"{'mode':28s} {'wall s (median)':>16s} {'vs per-run':>11s}  all")
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(f"{mode:28s} {med:16.2f} {ref / med:10.2f}x  {' '.join(f'{t:.2f}' for t in ts)}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "times": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
