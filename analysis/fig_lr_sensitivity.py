"""LR-sensitivity curves: validation metric of every tuning trial against its learning rate, per task.

    python analysis/fig_lr_sensitivity.py --results results/<exp> --out paper/generated/<exp>/fig_lr_sensitivity

Writes <out>/fig_lr_sensitivity_<task>.pdf and .png for every task that has something to plot.
"""

import sys

from optirep.report.figures import script_main

if __name__ == "__main__":
    raise SystemExit(script_main("lr_sensitivity", __doc__.splitlines()[0], sys.argv[1:]))
