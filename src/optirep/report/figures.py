"""Figures from aggregate JSON (seaborn): learning curves, LR sensitivity, effective-rank bars; and the
forest plot of every claim from claims JSON (matplotlib).

Each function takes one task's aggregate dict and an output stem, writes `<stem>.pdf` and
`<stem>.png`, and returns the written paths (none when the aggregate has nothing to plot). The
scripts in analysis/ call them; nothing here recomputes a statistic beyond the per-step mean and
CI band seaborn draws over seeds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from optirep.report._io import as_float  # noqa: E402
from optirep.report.claim_text import effect_text  # noqa: E402

ERANK_METRICS = ("seed_effective_rank", "seed_top5_concentration", "feature_erank")


def _save(fig, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("pdf", "png"):
        p = stem.with_suffix(f".{ext}")
        # Fixed metadata keeps the PDF bytes stable across re-runs (DVC / snakemake hashes).
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        fig.savefig(p, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(p)
    plt.close(fig)
    return paths


def _title(agg: dict) -> str:
    return f"{agg['experiment']} / {agg['task']} ({agg['scale']})"


def curves_frame(agg: dict) -> pd.DataFrame:
    """Long table (label, seed, step, val_metric, train_loss) from the aggregate's curves."""
    rows = []
    for label, info in agg["per_label"].items():
        for c in info.get("curves", []):
            for i, step in enumerate(c.get("step", [])):
                rows.append({"optimizer": label, "seed": c["seed"], "step": step,
                             "val_metric": as_float(c["val_metric"][i]) if i < len(c.get("val_metric", [])) else math.nan,
                             "train_loss": as_float(c["train_loss"][i]) if i < len(c.get("train_loss", [])) else math.nan})
    return pd.DataFrame(rows, columns=["optimizer", "seed", "step", "val_metric", "train_loss"])


def fig_curves(agg: dict, stem: str | Path) -> list[Path]:
    """Validation metric and train loss against step: mean over seeds with a 95% CI band."""
    df = curves_frame(agg)
    if df.empty:
        return []
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8))
    for ax, col, ylabel in ((axes[0], "val_metric", f"validation {agg['metric']}"), (axes[1], "train_loss", "train loss")):
        d = df.dropna(subset=[col])
        if not d.empty:
            sns.lineplot(data=d, x="step", y=col, hue="optimizer", hue_order=agg["labels"],
                         errorbar=("ci", 95), ax=ax, legend=ax is axes[0])
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    target = as_float(agg.get("target", {}).get("value"))
    if math.isfinite(target):
        axes[0].axhline(target, color="grey", ls="--", lw=0.8, label="target")
    n = sorted({info["n_runs"] for info in agg["per_label"].values()})
    fig.suptitle(f"{_title(agg)}; n = {'/'.join(map(str, n))} seeds, band = 95% CI", fontsize=8)
    if axes[0].get_legend():
        axes[0].legend(fontsize=6)
    return _save(fig, stem)


def lr_frame(agg: dict, hp: str = "lr") -> pd.DataFrame:
    """One row per tuning trial that set `hp`: optimizer, hp value, final/best val, diverged."""
    rows = []
    for label, info in agg["per_label"].items():
        tuning = info.get("tuning") or {}
        sel = (tuning.get("selected") or {}).get("trial")
        for t in tuning.get("trials", []):
            x = as_float((t.get("hp") or {}).get(hp))
            if math.isfinite(x):
                rows.append({"optimizer": label, hp: x, "final_val": as_float(t.get("final_val")),
                             "best_val": as_float(t.get("best_val")), "diverged": bool(t.get("diverged")),
                             "selected": t.get("trial") == sel})
    return pd.DataFrame(rows, columns=["optimizer", hp, "final_val", "best_val", "diverged", "selected"])


def fig_lr_sensitivity(agg: dict, stem: str | Path, hp: str = "lr", value: str = "final_val") -> list[Path]:
    """Validation metric of every tuning trial against its learning rate (log x); crosses = diverged."""
    df = lr_frame(agg, hp)
    if df.empty:
        return []
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    ok = df.dropna(subset=[value]).sort_values(hp)
    if not ok.empty:
        sns.lineplot(data=ok, x=hp, y=value, hue="optimizer", marker="o", estimator=None, ax=ax)
        sel = ok[ok["selected"]]
        ax.scatter(sel[hp], sel[value], s=60, facecolors="none", edgecolors="k", label="selected", zorder=3)
    bad = df[df["diverged"] | df[value].isna()]
    if not bad.empty:
        y = ax.get_ylim()[0] if not ok.empty else 0.0
        ax.scatter(bad[hp], [y] * len(bad), marker="x", color="red", label="diverged", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel(hp)
    ax.set_ylabel(f"{value.replace('_', ' ')} {agg['metric']}")
    ax.set_title(f"{_title(agg)}: tuning trials", fontsize=7)
    ax.legend(fontsize=6)
    return _save(fig, stem)


def erank_frame(agg: dict, metrics=ERANK_METRICS) -> pd.DataFrame:
    rows = []
    for label, info in agg["per_label"].items():
        for m in metrics:
            for seed, v in zip(info["seeds"], info["values"].get(m, [])):
                rows.append({"optimizer": label, "metric": m, "seed": seed, "value": as_float(v)})
    return pd.DataFrame(rows, columns=["optimizer", "metric", "seed", "value"])


def fig_erank(agg: dict, stem: str | Path, metrics=ERANK_METRICS) -> list[Path]:
    """Bars (mean, 95% CI) of each spectral metric per optimizer, with every seed as a point."""
    df = erank_frame(agg, metrics).dropna(subset=["value"])
    if df.empty:
        return []
    present = [m for m in metrics if m in set(df["metric"])]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(present), figsize=(2.6 * len(present), 2.8), squeeze=False)
    for ax, m in zip(axes[0], present):
        d = df[df["metric"] == m]
        order = [lab for lab in agg["labels"] if lab in set(d["optimizer"])]
        sns.barplot(data=d, x="optimizer", y="value", order=order, errorbar=("ci", 95), ax=ax, alpha=0.6)
        sns.stripplot(data=d, x="optimizer", y="value", order=order, color="k", size=3, ax=ax)
        ax.set_title(m.replace("_", " "), fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=30, labelsize=6)
    fig.suptitle(f"{_title(agg)}; points = seeds", fontsize=8)
    return _save(fig, stem)


FIGURES = {"curves": fig_curves, "lr_sensitivity": fig_lr_sensitivity, "erank": fig_erank}


def script_main(kind: str, description: str, argv=None) -> int:
    """The body of analysis/fig_<kind>.py: one figure per task of an experiment's aggregates."""
    import argparse

    from optirep.report.aggregate import read_aggregates

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--results", required=True, help="results/<exp>")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    written = []
    for agg in read_aggregates(args.results):
        written += FIGURES[kind](agg, Path(args.out) / f"fig_{kind}_{agg['task']}")
    print(f"{args.out}: {len(written)} files")
    return 0


FOREST_GROUPS = (("V6", "BiostatisV6"), ("GRN", "EnhancedSGD"), ("PW", "Planeswalker"), ("NP", "NeuroPlastic"))
_FOREST_MARKS = (("replication", "s", "white", "(a) seed settings"), ("attribution", "o", "black", "(b) equal tuning"),
                 ("lr_control", "^", "tab:blue", "(b) LR-matched control"))


def forest_rows(claims: dict) -> list[dict]:
    """One row per measured claim: each question's effect, interval, claimed effect in SESOI units.

    x = oriented effect / SESOI (so 0 = no effect, 1 = the smallest effect of interest, and the claimed
    effect sits at claimed / SESOI, 2 by default); only what optirep claims computed.
    """
    rows = []
    for rec in claims["claims"]:
        qs = rec.get("questions") or {}
        if not qs:
            continue
        row = {"id": rec["id"], "group": rec["id"].split("-")[0], "verdict": rec["verdict"],
               "direction": rec["direction"], "q": {}}
        for key in qs:
            q = qs[key]
            ses = as_float(q.get("sesoi"))
            if not (math.isfinite(ses) and ses > 0) or not math.isfinite(as_float(q.get("estimate"))):
                continue
            row["q"][key] = {"x": q["estimate"] / ses, "lo": as_float(q.get("ci_low")) / ses,
                             "hi": as_float(q.get("ci_high")) / ses, "verdict": q.get("verdict"),
                             "claimed": as_float(q.get("claimed_effect")) / ses}
        row["text"] = effect_text(qs["attribution"]) if "attribution" in qs else None
        if row["q"]:  # a claim whose comparisons were all not run has nothing to draw
            rows.append(row)
    return rows


def fig_forest(claims: dict, stem: str | Path, clip: tuple[float, float] = (-6.0, 8.0)) -> list[Path]:
    """The paper's main figure: per claim, the effect of each question with its 90% interval, the claimed
    effect and the SESOI, in SESOI units, grouped by optimizer (one page). Values beyond `clip` are drawn
    at the edge with their number. A study without a measured claim gets a one-line panel saying so."""
    rows = forest_rows(claims)
    if not rows:  # the paper includes the figure whatever the study measured
        fig, ax = plt.subplots(figsize=(4.4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"No claim was measured in this study ({claims.get('n_claims', 0)} claims not run).",
                ha="center", va="center", fontsize=8)
        return _save(fig, stem)
    order = [g for g, _ in FOREST_GROUPS]
    rows.sort(key=lambda r: (order.index(r["group"]) if r["group"] in order else 99))
    fig, ax = plt.subplots(figsize=(4.4, 0.36 * len(rows) + 1.6))
    lo_c, hi_c = clip
    y, yticks, ylabels, seps = 0.0, [], [], []
    group = None
    for r in rows:
        if r["group"] != group:
            if group is not None:
                seps.append(y + 0.5)
                y -= 0.6
            group = r["group"]
            name = dict(FOREST_GROUPS).get(group, group)
            ax.text(lo_c - 0.3, y + 0.55, name, fontsize=8.5, fontweight="bold", ha="right", va="center", clip_on=False)
        offsets = {"replication": 0.25, "attribution": 0.0, "lr_control": -0.25}
        for key, marker, face, _ in _FOREST_MARKS:
            q = r["q"].get(key)
            if not q:
                continue
            yy = y + offsets[key]
            lo, hi = max(q["lo"], lo_c), min(q["hi"], hi_c)
            ax.plot([lo, hi], [yy, yy], color="black" if key != "lr_control" else "tab:blue", lw=1.1 if key == "attribution" else 0.8)
            x = min(max(q["x"], lo_c), hi_c)
            ax.plot([x], [yy], marker=marker, ms=5.5 if key == "attribution" else 4.5, mfc=face,
                    mec="black" if key != "lr_control" else "tab:blue", ls="none", zorder=3)
            if q["x"] > hi_c or q["x"] < lo_c:
                ax.annotate(f"{q['x']:.3g}", (x, yy), xytext=(-3 if q["x"] > hi_c else 3, 4), textcoords="offset points",
                            fontsize=6, ha="right" if q["x"] > hi_c else "left")
            if key == "attribution" and math.isfinite(q["claimed"]):
                ax.plot([min(max(q["claimed"], lo_c), hi_c)], [y], marker="*", ms=7, color="tab:red", ls="none", zorder=2)
        yticks.append(y)
        ylabels.append(r["id"])
        ax.text(hi_c + 0.3, y, f"{r['verdict']}" + (f"\n{r['text']}" if r.get("text") else ""), fontsize=6.2,
                va="center", ha="left", clip_on=False)
        y -= 1.0
    ax.axvline(0, color="0.4", lw=0.8)
    ax.axvline(1, color="tab:green", lw=0.8, ls="--")
    if any(r["direction"] in ("equal", "not_worse") for r in rows):
        ax.axvline(-1, color="tab:green", lw=0.8, ls=":")
    for s in seps:
        ax.axhline(s - 0.8, color="0.85", lw=0.6)
    ax.set_yticks(yticks, ylabels, fontsize=7.5)
    ax.set_xlim(lo_c, hi_c)
    ax.set_ylim(y + 0.4, 1.2)
    ax.set_xlabel("effect / SESOI, oriented so that the claim says > 0\n(0: no effect; 1: smallest effect of interest)",
                  fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker=m, mfc=f, mec="black" if k != "lr_control" else "tab:blue",
                      color="black" if k != "lr_control" else "tab:blue", ls="-", lw=0.8, label=lab)
               for k, m, f, lab in _FOREST_MARKS]
    handles += [Line2D([], [], marker="*", color="tab:red", ls="none", ms=7, label="claimed effect"),
                Line2D([], [], color="tab:green", ls="--", lw=0.8, label="SESOI (parity / non-inferiority: ±1)")]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.6, 1.0), ncol=2, fontsize=6.5, frameon=False)
    return _save(fig, stem)
