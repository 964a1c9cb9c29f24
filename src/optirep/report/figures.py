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
