"""Figures from aggregate JSON (seaborn): learning curves, LR sensitivity, effective-rank intervals; and the
forest plot of every claim from claims JSON (matplotlib).

Each function takes one task's aggregate dict and an output stem, writes `<stem>.pdf` and
`<stem>.png`, and returns the written paths (none when the aggregate has nothing to plot). The
scripts in analysis/ call them. Every interval drawn is a t-interval: the effective-rank
intervals are the aggregate's own `stats[metric].ci_low/ci_high`; the learning-curve bands are
`optirep.analysis.stats.summarize` (the function that computes those `stats`) over the seeds of
each step, because the aggregate stores per-seed curves, not per-step summaries. No bootstrap.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from optirep.analysis.stats import summarize  # noqa: E402
from optirep.report._io import as_float  # noqa: E402
from optirep.report.aggregate import tuning_view  # noqa: E402
from optirep.report.claim_text import effect_text  # noqa: E402

ERANK_METRICS = ("seed_effective_rank", "seed_top5_concentration", "feature_erank")
# Printed text block of paper/ms.tex (letter, 2.2 cm margins), inches: figures are drawn at the size
# they are printed, so 6-7 pt fonts stay 6-7 pt on paper.
TEXT_WIDTH_IN = 6.7
# A loss panel whose finite positive values span more than this ratio (a run that blew up) gets a log axis.
LOG_RATIO = 1e3


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
    """Long table (label, seed, step, val_metric, train_loss) from the aggregate's curves.

    Non-finite values (NaN, +-inf, and JSON null, which is how the aggregate stores them) become NaN.
    """
    rows = []
    for label, info in agg["per_label"].items():
        for c in info.get("curves", []):
            for i, step in enumerate(c.get("step", [])):
                rows.append({"optimizer": label, "seed": c["seed"], "step": step,
                             "val_metric": as_float(c["val_metric"][i]) if i < len(c.get("val_metric", [])) else math.nan,
                             "train_loss": as_float(c["train_loss"][i]) if i < len(c.get("train_loss", [])) else math.nan})
    df = pd.DataFrame(rows, columns=["optimizer", "seed", "step", "val_metric", "train_loss"])
    for col in ("val_metric", "train_loss"):
        df[col] = df[col].astype(float).where(np.isfinite(df[col].astype(float)))
    return df


def curve_bands(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (optimizer, step): n finite seeds, mean and the 95% t-interval of `col` (summarize).

    Returns columns optimizer, step, n, mean, ci_low, ci_high; a step with one finite seed has a
    NaN interval (no band), a step with none is left out.
    """
    rows = []
    for (label, step), g in df.groupby(["optimizer", "step"], sort=True):
        s = summarize(g[col].tolist())
        if s["n"]:
            rows.append({"optimizer": label, "step": step, "n": s["n"], "mean": s["mean"],
                         "ci_low": s["ci_low"], "ci_high": s["ci_high"]})
    return pd.DataFrame(rows, columns=["optimizer", "step", "n", "mean", "ci_low", "ci_high"])


#: characters of a 7 pt figure title that fit the text width (TEXT_WIDTH_IN) on one line
TITLE_CHARS = 140


def needs_log_axis(agg: dict, values) -> bool:
    """True when a loss panel must be log-scaled: a run is counted diverged, a value is non-finite,
    or the finite positive values span more than LOG_RATIO (a loss of 1e31 next to 0.1)."""
    if any(info.get("n_diverged") for info in agg["per_label"].values()):
        return True
    v = np.asarray(values, dtype=float)
    if v.size and not np.all(np.isfinite(v)):
        return True
    pos = v[np.isfinite(v) & (v > 0)]
    return bool(pos.size) and float(pos.max() / pos.min()) > LOG_RATIO


def label_palette(labels) -> dict:
    """One distinct colour per label, the same in every panel (tab10 up to 10 labels, tab20 beyond)."""
    labels = list(labels)
    colors = sns.color_palette("tab10" if len(labels) <= 10 else "tab20", len(labels))
    return dict(zip(labels, colors))


# Dash patterns cycled over the labels, so a curve drawn over a near-identical one (V6 at lr x gain vs
# AdamW at the matched lr) leaves the earlier one visible through its gaps.
LINE_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))


def label_linestyles(labels) -> dict:
    """One dash pattern per label, in `labels` order (LINE_STYLES cycled): with `label_palette`, labels
    that differ in colour also differ in pattern where curves overlap."""
    return {lab: LINE_STYLES[i % len(LINE_STYLES)] for i, lab in enumerate(labels)}


def _outside_legend(fig, handles, labels, ncol: int) -> None:
    """Legend under the panels, never over the data (13 labels do not fit inside an axis)."""
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=6,
               frameon=False, handlelength=1.5, columnspacing=1.0)


# The values a task metric can take (closed interval): a t-interval reaching past them (seeds that
# failed next to seeds that learned give 68.6 +- 20.1 % accuracy, a band above 100 %) is not drawn.
METRIC_RANGE = {"accuracy": (0.0, 1.0), "pixel_accuracy": (0.0, 1.0), "miou": (0.0, 1.0),
                "perplexity": (1.0, math.inf), "recon_mse": (0.0, math.inf)}


def identical_labels(df: pd.DataFrame, labels) -> dict:
    """{label: the earlier label whose runs it repeats value for value}, from a `curves_frame`.

    Two labels are identical when they logged the same seeds and steps with equal validation metric
    and train loss everywhere (NaN matching NaN). A tuned label whose tuning selected the published
    settings trains exactly the published runs; drawn twice, the later line hides the earlier one and
    its legend entry points at nothing, so `fig_curves` draws it once under both names.
    """
    labels = list(labels)
    cols = ["seed", "step", "val_metric", "train_loss"]
    runs = {lab: df[df["optimizer"] == lab].sort_values(["seed", "step"])[cols].reset_index(drop=True)
            for lab in labels}
    same = {}
    for i, lab in enumerate(labels):
        for prev in labels[:i]:
            if prev not in same and not runs[lab].empty and runs[lab].equals(runs[prev]):
                same[lab] = prev
                break
    return same


def band_drawable(b: pd.DataFrame, log: bool, value_range=(-math.inf, math.inf)) -> np.ndarray:
    """Per row of a `curve_bands` frame: whether its interval [ci_low, ci_high] can be drawn as a band,
    i.e. lies inside `value_range` and, on a log axis, has a lower end > 0."""
    lo, hi = b["ci_low"].to_numpy(float), b["ci_high"].to_numpy(float)
    ok = (lo >= value_range[0]) & (hi <= value_range[1])
    return ok & (lo > 0) if log else ok


def fig_curves(agg: dict, stem: str | Path) -> list[Path]:
    """Validation metric and train loss against step: mean over seeds with the 95% t-interval band.

    The train-loss panel is log-scaled when `needs_log_axis` says so. Where a band cannot be drawn
    (`band_drawable`: on a log axis its lower end is <= 0; on the metric panel it leaves the metric's
    range, METRIC_RANGE, e.g. accuracy above 1 when some seeds failed) the band is left out and that
    label's seeds are drawn as thin lines (said in the title). Non-finite values are dropped (counted
    in the title); the legend sits under the panels.
    """
    df = curves_frame(agg)
    if df.empty or df[["val_metric", "train_loss"]].isna().all().all():
        return []
    labels = [lab for lab in agg["labels"] if lab in set(df["optimizer"])]
    colors = label_palette(labels)
    styles = label_linestyles(labels)
    # a label repeating an earlier one's runs is drawn once, its legend entry naming both
    repeats = identical_labels(df, labels)
    names_of = {lab: " = ".join([lab] + [r for r, p in repeats.items() if p == lab]) for lab in labels}
    labels = [lab for lab in labels if lab not in repeats]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH_IN, 2.5), layout="constrained")
    raw_loss = [as_float(v) for info in agg["per_label"].values() for c in info.get("curves", [])
                for v in c.get("train_loss", [])]
    log_loss = needs_log_axis(agg, raw_loss)
    seeds_drawn = False
    for ax, col, ylabel in ((axes[0], "val_metric", f"validation {agg['metric']}"),
                            (axes[1], "train_loss", "train loss" + (" (log)" if log_loss else ""))):
        bands = curve_bands(df.dropna(subset=[col]), col)
        log = col == "train_loss" and log_loss
        if log:
            ax.set_yscale("log")
        if bands["step"].nunique() == 1:  # one evaluation per run (eval_every = steps): no curve to draw
            _final_only(ax, bands, labels, colors, names_of)
            ax.set_ylabel(ylabel)
            continue
        for label in labels:
            b = bands[bands["optimizer"] == label]
            if b.empty:
                continue
            ax.plot(b["step"], b["mean"], color=colors[label], ls=styles[label], lw=1.0, label=names_of[label])
            # An interval that reaches <= 0 on a log axis, or leaves the metric's range, is not drawn
            # as a band: the label's seeds are drawn as thin lines instead.
            rng = METRIC_RANGE.get(agg.get("metric"), (-math.inf, math.inf)) if col == "val_metric" else (-math.inf, math.inf)
            ok = band_drawable(b, log, rng)
            ax.fill_between(b["step"], b["ci_low"], b["ci_high"], where=ok, color=colors[label],
                            alpha=0.2, lw=0)
            if not ok.all():
                seeds_drawn = True
                for _, g in df[df["optimizer"] == label].dropna(subset=[col]).groupby("seed"):
                    ax.plot(g["step"], g[col], color=colors[label], lw=0.4, alpha=0.6)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    target = as_float(agg.get("target", {}).get("value"))
    if math.isfinite(target):
        axes[0].axhline(target, color="grey", ls="--", lw=0.8, label="target")
    handles, names = axes[0].get_legend_handles_labels()
    _outside_legend(fig, handles, names, ncol=min(len(names), 5))
    n = sorted({info["n_runs"] for info in agg["per_label"].values()})
    dropped = int(np.sum(~np.isfinite(np.asarray(raw_loss, dtype=float))))
    note = f"; {dropped} non-finite loss values not drawn" if dropped else ""
    # seeds with no finite validation value (a run that diverged before its first evaluation logs none):
    # the line and band of such a label average fewer seeds than n, which the title must say
    drawn_seeds = df.dropna(subset=["val_metric"]).groupby("optimizer")["seed"].nunique()
    short = [f"{label} {int(drawn_seeds.get(label, 0))} of {info['n_runs']}" for label, info in agg["per_label"].items()
             if label in labels and int(drawn_seeds.get(label, 0)) < info["n_runs"]]
    if short:
        note += "; seeds with a finite validation curve: " + ", ".join(short)
    if repeats:
        note += "; a = b: identical runs, drawn once"
    if seeds_drawn:
        note += "\nthin lines = seeds where the band cannot be drawn (<= 0 on a log axis, or outside the metric's range)"
    title = f"{_title(agg)}; n = {'/'.join(map(str, n))} seeds, band = 95% t-interval{note}"
    # wrapped to the figure's width (a longer line widens the saved image beyond the panels)
    fig.suptitle("\n".join(textwrap.fill(part, TITLE_CHARS) for part in title.split("\n")), fontsize=7)
    return _save(fig, stem)


def _final_only(ax, bands: pd.DataFrame, labels: list, colors: dict, names: dict | None = None) -> None:
    """A panel whose runs logged one point each (the final step): mean and 95% t-interval per label,
    side by side (a line through one point would not show)."""
    for i, label in enumerate(labels):
        b = bands[bands["optimizer"] == label]
        if b.empty:
            continue
        m, lo, hi = (float(b[k].iloc[0]) for k in ("mean", "ci_low", "ci_high"))
        err = [[m - lo], [hi - m]] if math.isfinite(lo) and math.isfinite(hi) else None
        ax.errorbar([i], [m], yerr=err, fmt="o", ms=3, capsize=2, lw=1.0, color=colors[label],
                    label=(names or {}).get(label, label))
    ax.set_xticks([])
    ax.set_xlim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(f"step {int(bands['step'].iloc[0])}, the only evaluation of each run")


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


def sweep_needs_log_axis(metric: str | None, values, ratio: float = 10.0) -> bool:
    """True when an LR-sweep panel needs a log y axis: the metric has no upper bound in METRIC_RANGE
    (perplexity, reconstruction MSE; not accuracy) and its finite values are all > 0 and span more than
    `ratio` (an undertrained low-lr point at perplexity 15,000 would flatten the optimum near 250)."""
    hi_bound = METRIC_RANGE.get(metric, (-math.inf, math.inf))[1]
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    return bool(math.isinf(hi_bound) and v.size and v.min() > 0 and v.max() / v.min() > ratio)


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
    styles = label_linestyles(labels)
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
            ax.plot(ok["x"], ok["mean"], marker="o", ms=3, color=colors[label], ls=styles[label], label=name)
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
    log_y = sweep_needs_log_axis(agg.get("metric"), df[value])
    if log_y:
        axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel(f"{value.replace('_', ' ')} {agg['metric']}" + (" (log)" if log_y else ""))
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


def erank_intervals(agg: dict, metric: str) -> pd.DataFrame:
    """The aggregate's own summary of `metric` per optimizer: n, mean, ci_low, ci_high (t-interval)."""
    rows = []
    for label in agg["labels"]:
        s = (agg["per_label"].get(label, {}).get("stats") or {}).get(metric)
        if s and s.get("n"):
            rows.append({"optimizer": label, "n": s["n"], "mean": as_float(s.get("mean")),
                         "ci_low": as_float(s.get("ci_low")), "ci_high": as_float(s.get("ci_high"))})
    return pd.DataFrame(rows, columns=["optimizer", "n", "mean", "ci_low", "ci_high"])


def fig_erank(agg: dict, stem: str | Path, metrics=ERANK_METRICS) -> list[Path]:
    """Per spectral metric: each optimizer's mean and 95% t-interval (from the aggregate's `stats`),
    with every seed as a grey point, optimizers on the vertical axis.

    A point/interval plot, not bars: the value axis is zoomed to the data (it does not start at 0,
    and the title says so), so differences of 0.01 in an effective rank near 10 stay visible. The
    baseline's mean is a dashed vertical line.
    """
    df = erank_frame(agg, metrics).dropna(subset=["value"])
    if df.empty:
        return []
    present = [m for m in metrics if m in set(df["metric"])]
    order = [lab for lab in agg["labels"] if lab in set(df["optimizer"])]
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(present), figsize=(TEXT_WIDTH_IN, 0.8 + 0.2 * len(order)),
                             sharey=True, squeeze=False, layout="constrained")
    ypos = {lab: i for i, lab in enumerate(order)}
    for ax, m in zip(axes[0], present):
        d = df[df["metric"] == m]
        ax.scatter(d["value"], d["optimizer"].map(ypos), s=6, color="0.6", zorder=2, lw=0)
        iv = erank_intervals(agg, m)
        iv = iv[iv["optimizer"].isin(ypos)]
        y = iv["optimizer"].map(ypos)
        ax.errorbar(iv["mean"], y, xerr=[iv["mean"] - iv["ci_low"], iv["ci_high"] - iv["mean"]],
                    fmt="o", ms=3, color="k", ecolor="k", elinewidth=1.0, capsize=2, zorder=3)
        base = iv[iv["optimizer"] == agg.get("baseline")]
        if not base.empty:
            ax.axvline(float(base["mean"].iloc[0]), color="tab:blue", ls="--", lw=0.7, zorder=1)
        ax.set_title(m.replace("_", " "), fontsize=7)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelsize=6)
        ax.margins(x=0.08)
    axes[0][0].set_yticks(range(len(order)), order, fontsize=6)
    axes[0][0].set_ylim(len(order) - 0.5, -0.5)
    fig.suptitle(f"{_title(agg)}; mean and 95% t-interval, grey = seeds, dashed = baseline "
                 f"{agg.get('baseline')}; axes zoomed (not from 0)", fontsize=7)
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
    # the folder is the stage's output (Snakemake directory(), DVC out): it exists even when no task has
    # anything to plot (a GPT has no effective-rank metrics), so DVC can record it
    Path(args.out).mkdir(parents=True, exist_ok=True)
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
