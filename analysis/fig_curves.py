"""Learning curves (validation metric and train loss, mean and 95% CI band over seeds) per task.

    python analysis/fig_curves.py --results results/<exp> --out paper/generated/<exp>

Writes <out>/fig_curves_<task>.pdf and .png for every task that has something to plot.
"""

import argparse
import sys
from pathlib import Path

from optirep.report.aggregate import read_aggregates
from optirep.report.figures import fig_curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="results/<exp>")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    written = []
    for agg in read_aggregates(args.results):
        written += fig_curves(agg, Path(args.out) / f"fig_curves_{agg['task']}")
    print(f"{args.out}: {len(written)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
