"""Effective-rank / spectral-concentration bars with per-seed points, per task.

    python analysis/fig_erank.py --results results/<exp> --out paper/generated/<exp>

Writes <out>/fig_erank_<task>.pdf and .png for every task that has something to plot.
"""

import argparse
import sys
from pathlib import Path

from optirep.report.aggregate import read_aggregates
from optirep.report.figures import fig_erank


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="results/<exp>")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    written = []
    for agg in read_aggregates(args.results):
        written += fig_erank(agg, Path(args.out) / f"fig_erank_{agg['task']}")
    print(f"{args.out}: {len(written)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
