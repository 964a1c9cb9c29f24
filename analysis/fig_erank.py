"""Effective-rank / spectral-concentration point-interval plots (aggregate t-intervals, per-seed points), per task.

    python analysis/fig_erank.py --results results/<exp> --out paper/generated/<exp>/fig_erank

Writes <out>/fig_erank_<task>.pdf and .png for every task that has something to plot.
"""

import sys

from optirep.report.figures import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("erank", __doc__.splitlines()[0], sys.argv[1:]))
