"""Power before the run (issue #10, rule 8): per claim, the minimum detectable effect at the planned
number of seeds and the number of seeds its SESOI needs, from a pilot's per-seed SDs.

    optirep power --claims experiments/claims.yaml --results results --only smoke --n 5 [--out power.json]

The pilot is any study whose aggregates hold the claims' comparisons (the smoke study, a first seed of
the real one, or a finished study for the next). For every question of every measured claim it reports
the SD of the per-seed differences (in the test's units: a difference, or a log ratio), the SESOI, the
minimum detectable effect at `--n` seeds per arm (one-sided alpha and power from the claims file's
`design`) and the seeds needed for the SESOI; a claim needing more than `design.seed_budget` seeds, or
whose exact rank test cannot reach alpha at `--n`, is marked "untestable at this scale". Same numbers as
the `power` block of each record of `optirep claims` (optirep.analysis.stats.power_analysis).
"""

from __future__ import annotations

import argparse
import math
import sys

from optirep.report._io import write_json
from optirep.report.claims import ClaimsError, evaluate, load_claims


def table(out: dict) -> list[dict]:
    """One row per tested question: id, question, sd, sesoi, mde, n, n_needed, untestable."""
    rows = []
    for rec in out["claims"]:
        for name, q in (rec.get("questions") or {}).items():
            pw = q.get("power")
            if not pw:
                continue
            rows.append({"id": rec["id"], "question": name, "scale": q.get("effect_scale"), "sd": pw["sd"],
                         "sesoi": pw["sesoi"], "n": pw["n"], "mde": pw["mde"], "n_needed": pw["n_needed"],
                         "untestable": pw.get("untestable")})
    return rows


def main(argv: list[str] | None = None) -> int:
    """`optirep power`: print (and optionally write) the power table."""
    ap = argparse.ArgumentParser(prog="optirep power", description=__doc__.splitlines()[0])
    ap.add_argument("--claims", default="experiments/claims.yaml")
    ap.add_argument("--results", default="results", help="results root of the pilot (<experiment>/aggregate/)")
    ap.add_argument("--only", nargs="+", default=None, metavar="EXPERIMENT", help="the pilot's experiments")
    ap.add_argument("--n", type=int, required=True, help="planned seeds per arm")
    ap.add_argument("--experiments", default="experiments")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.n < 2:
        print(f"optirep power: --n must be at least 2 seeds per arm, got {args.n}", file=sys.stderr)
        return 2
    try:
        doc = load_claims(args.claims)
    except ClaimsError as exc:
        print(f"optirep power: {exc}", file=sys.stderr)
        return 2
    out = evaluate(doc, args.results, experiments_dir=args.experiments, only=args.only, planned_n=args.n)
    rows = table(out)
    if not rows:
        print("optirep power: no claim's comparison found in these results (nothing to estimate an SD from)",
              file=sys.stderr)
        return 1
    print(f"{'claim':7} {'question':12} {'scale':11} {'SD':>10} {'SESOI':>10} {'MDE@n=' + str(args.n):>10} {'n needed':>9}")
    for r in rows:
        need = "-" if r["n_needed"] is None and not math.isfinite(r["sd"]) else (r["n_needed"] or ">100000")
        print(f"{r['id']:7} {r['question']:12} {str(r['scale']):11} {r['sd']:10.3g} {r['sesoi']:10.3g} {r['mde']:10.3g} "
              f"{need!s:>9}" + (f"  untestable at this scale: {r['untestable']}" if r["untestable"] else ""))
    if args.out:
        write_json(args.out, {"n": args.n, "alpha": out["alpha"], "power": out["power"],
                              "seed_budget": out["seed_budget"], "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
