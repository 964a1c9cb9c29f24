"""Learning curves (validation metric and train loss, mean and 95% t-interval band over seeds) per task.

    python analysis/fig_curves.py --results results/<exp> --out paper/generated/<exp>/fig_curves

Writes <out>/fig_curves_<task>.pdf and .png for every task that has something to plot. The train-loss
panel turns logarithmic when a run diverged or the losses span more than 1e3 (a 1e31 blow-up).
"""

import sys

from optirep.report.figures import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("curves", __doc__.splitlines()[0], sys.argv[1:]))
