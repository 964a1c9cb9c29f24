"""LR-sensitivity curves: validation metric of every tuning trial against its learning rate, per task.

    python analysis/fig_lr_sensitivity.py --results results/<exp> --out paper/generated/<exp>

Writes <out>/fig_lr_sensitivity_<task>.pdf and .png for every task that has something to plot.
"""

import argparse
import sys
from pathlib import Path

from optirep.report.aggregate import read_aggregates
from optirep.report.figures import fig_lr_sensitivity


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="results/<exp>")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    written = []
    for agg in read_aggregates(args.results):
        written += fig_lr_sensitivity(agg, Path(args.out) / f"fig_lr_sensitivity_{agg['task']}")
    print(f"{args.out}: {len(written)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
