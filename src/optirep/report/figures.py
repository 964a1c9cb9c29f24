"""Figures from aggregate JSON (seaborn): learning curves, LR sensitivity, effective-rank bars.

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
from optirep.report.aggregate import tuning_view  # noqa: E402

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
    """One row per (tuning configuration, tuning seed) that set `hp`.

    Columns: optimizer, trial, stage ("lr_sweep" | "random" | "trial" for the old protocol), hp value,
    effective lr (NaN where not measured), seed, final_val, best_val, diverged, selected. Old aggregates
    (one seed per trial) give one row per trial with seed NaN.
    """
    rows = []
    for label, info in agg["per_label"].items():
        view = tuning_view(info.get("tuning"))
        if view is None:
            continue
        for t in view["trials"]:
            x = as_float((t.get("hp") or {}).get(hp))
            if not math.isfinite(x):
                continue
            base = {"optimizer": label, "trial": t.get("trial"), "stage": t.get("stage", "trial"), hp: x,
                    "effective_lr": as_float(t.get("effective_lr")), "diverged": bool(t.get("diverged")),
                    "selected": t.get("trial") == view["selected_trial"]}
            seeds = t.get("seeds")
            if seeds and t.get("final_val_seeds") is not None:
                for i, seed in enumerate(seeds):
                    rows.append({**base, "seed": seed, "final_val": as_float(t["final_val_seeds"][i]),
                                 "best_val": as_float((t.get("best_val_seeds") or [math.nan] * len(seeds))[i])})
            else:
                rows.append({**base, "seed": math.nan, "final_val": as_float(t.get("final_val")),
                             "best_val": as_float(t.get("best_val"))})
    cols = ["optimizer", "trial", "stage", hp, "effective_lr", "seed", "final_val", "best_val", "diverged", "selected"]
    return pd.DataFrame(rows, columns=cols)


def _log_tick(x: float, _pos=None) -> str:
    """'$10^{-3}$' on a decade, '$3{\\times}10^{-4}$' between decades (tick labels of a log lr axis)."""
    if x <= 0:
        return ""
    e = math.floor(math.log10(x) + 1e-9)
    m = round(x / 10 ** e, 1)
    return f"$10^{{{e}}}$" if abs(m - 1) < 1e-6 else f"${m:g}{{\\times}}10^{{{e}}}$"


def _log_axis(ax, values) -> None:
    """Log x axis: decade ticks, plus a tick at 3x each decade when the data span under two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = min(values), max(values)
    decades = math.log10(hi / lo) if lo > 0 else 0.0
    subs = (1.0,) if decades >= 2 else (1.0, 3.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(_log_tick))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    ax.xaxis.set_minor_formatter(NullFormatter())
    pad = 10 ** 0.22
    ax.set_xlim(lo / pad, hi * pad)


def fig_lr_sensitivity(agg: dict, stem: str | Path, hp: str = "lr", value: str = "final_val") -> list[Path]:
    """Validation metric against learning rate, one curve per tuned optimizer (the LR sweep of the tuning).

    Line: mean over the tuning seeds at each sweep point; band: the range (min..max) over those seeds;
    star: the selected configuration (it may be a random-search trial, plotted at its own lr); a dotted
    vertical line at the edge and "(optimum at lower/upper bound: ...)" in the legend where the search did
    not bracket the optimum (`tuning_view`'s edge: a hard bound or the budget stopped the sweep, or in old
    aggregates the selected lr is the smallest or largest sampled); red x: configurations with a diverged seed. A second panel plots the same curves against
    effective lr (lr x the optimizer's measured gain) when some optimizer reports one. Old aggregates
    (single-seed trials) are drawn the same way, without bands.
    """
    df = lr_frame(agg, hp)
    if df.empty:
        return []
    eff = df["effective_lr"].notna().any() and (df["effective_lr"] != df[hp]).any()
    axes_x = [hp] + (["effective_lr"] if eff else [])
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(axes_x), figsize=(3.6 * len(axes_x), 2.9), squeeze=False, sharey=True)
    labels = [lab for lab in agg["labels"] if lab in set(df["optimizer"])]
    colors = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    n_seeds = sorted({int(x) for x in df.groupby(["optimizer", "trial"])["seed"].nunique() if x > 0}) or [1]
    for ax, xcol in zip(axes[0], axes_x):
        for label in labels:
            d = df[df["optimizer"] == label]
            info = agg["per_label"][label]
            view = tuning_view(info.get("tuning"))
            sweep_pts = d[d["stage"].isin(["lr_sweep", "trial"])]
            grp = sweep_pts.groupby("trial").agg(x=(xcol, "mean"), mean=(value, "mean"), lo=(value, "min"),
                                                 hi=(value, "max"), diverged=("diverged", "any")).sort_values("x")
            ok = grp[~grp["diverged"] & grp["mean"].notna()]
            edge = (view or {}).get("edge")
            name = label + (f" (optimum at {edge} bound: {view['bound_hit']})" if edge else "")
            ax.plot(ok["x"], ok["mean"], marker="o", ms=3, color=colors[label], label=name)
            if (ok["hi"] > ok["lo"]).any():
                ax.fill_between(ok["x"], ok["lo"], ok["hi"], color=colors[label], alpha=0.2, lw=0)
            bad = grp[grp["diverged"] | grp["mean"].isna()]
            if not bad.empty:
                y = ok["mean"].min() if not ok.empty else 0.0
                ax.scatter(bad["x"], [y] * len(bad), marker="x", color="red", zorder=3)
            sel = d[d["selected"]]
            if not sel.empty:
                ax.scatter([sel[xcol].mean()], [sel[value].mean()], marker="*", s=120, color=colors[label],
                           edgecolors="k", linewidths=0.6, zorder=4)
            if edge and not ok.empty:  # a dotted line where the search stopped with its best point on the edge
                edge_row = ok.iloc[0] if edge == "lower" else ok.iloc[-1]
                ax.axvline(edge_row["x"], color=colors[label], ls=":", lw=1.2, zorder=1)
        vals = df[xcol].dropna()
        if not vals.empty:
            _log_axis(ax, vals.tolist())
        ax.set_xlabel("learning rate" if xcol == hp else "effective lr (lr x measured gain)")
    axes[0][0].set_ylabel(f"{value.replace('_', ' ')} {agg['metric']}")
    handles, names = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], marker="*", ls="", color="grey", markeredgecolor="k", ms=9))
    names.append("selected")
    if df["diverged"].any():
        handles.append(Line2D([], [], marker="x", ls="", color="red"))
        names.append("diverged")
    # below the axes, so it never hides a curve
    axes[0][0].legend(handles, names, fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=2,
                      frameon=False)
    band = f"band = range over {'/'.join(map(str, n_seeds))} tuning seeds" if max(n_seeds) > 1 else "one seed per trial"
    fig.suptitle(f"{_title(agg)}: LR sensitivity; {band}", fontsize=7)
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
