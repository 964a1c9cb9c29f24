"""The forest plot (the paper's main figure) from results/claims.json.

    python analysis/fig_forest.py --claims results/claims.json --out paper/generated/fig_forest
"""

import argparse
import sys

from optirep.report._io import read_json
from optirep.report.figures import fig_forest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", required=True, help="results/claims.json")
    ap.add_argument("--out", required=True, help="output stem (writes <out>.pdf and <out>.png)")
    args = ap.parse_args(argv)
    paths = fig_forest(read_json(args.claims), args.out)
    print(", ".join(map(str, paths)) or f"{args.claims}: no measured claim, no figure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
