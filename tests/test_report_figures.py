"""Paper figures on small synthetic aggregates: t-interval bands and intervals, log loss axis,
zoomed effective-rank axis, legends outside, Grad-CAM grid that fits a page, LaTeX placement."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import matplotlib.collections as mcoll
import numpy as np
import pytest
import scipy.stats as st

from optirep.analysis import gradcam as gc
from optirep.report import figures

REPO = Path(__file__).resolve().parents[1]

LOSS_A = [[2.0, 1.0, 0.5], [2.2, 1.3, 0.6], [1.8, 0.9, 0.4]]  # 3 seeds x 3 steps
LOSS_B = [[2.0, 1.5, 1.0], [2.1, 1.4, 1.1], [1.9, 1.6, 0.9]]


def _agg(loss_b=LOSS_B, n_diverged=0, stats_b=None):
    """Two labels, three seeds, three steps; erank values near 9.9 with a hand-set aggregate interval."""
    def label(losses, erank, stats, nd=0):
        return {"n_runs": 3, "n_diverged": nd, "seeds": [0, 1, 2],
                "curves": [{"seed": s, "step": [10, 20, 30], "val_metric": [0.5 + 0.1 * s, 0.6, 0.7],
                            "train_loss": loss} for s, loss in enumerate(losses)],
                "values": {"seed_effective_rank": erank},
                "stats": {"seed_effective_rank": stats}}
    return {"experiment": "synth", "task": "clf", "scale": "seed scale, CPU", "metric": "accuracy",
            "labels": ["a", "b"], "baseline": "a", "target": {"value": None},
            "per_label": {
                "a": label(LOSS_A, [9.95, 9.96, 9.97], {"n": 3, "mean": 9.96, "ci_low": 9.955, "ci_high": 9.965}),
                "b": label(loss_b, [9.93, 9.94, 9.95], stats_b or {"n": 3, "mean": 9.94, "ci_low": 9.92,
                                                                     "ci_high": 9.96}, n_diverged)}}


@pytest.fixture
def drawn(monkeypatch):
    """Keep the figure a function draws instead of writing it: figs[-1] after the call."""
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, stem: figs.append(fig) or [Path(f"{stem}.pdf")])
    return figs


def _band(ax, index):
    """{x: (lower, upper)} of the index-th fill_between band of an axis (its polygon's extent per x)."""
    poly = [c for c in ax.collections if isinstance(c, mcoll.PolyCollection)][index]
    v = poly.get_paths()[0].vertices
    return {float(x): (v[v[:, 0] == x, 1].min(), v[v[:, 0] == x, 1].max()) for x in np.unique(v[:, 0])}


def test_loss_band_is_the_t_interval_over_seeds(drawn):
    figures.fig_curves(_agg(), "unused")
    loss_ax = drawn[-1].axes[1]
    band = _band(loss_ax, 0)  # label "a"
    a = np.array(LOSS_A)
    assert sorted(band) == [10, 20, 30]
    for j, step in enumerate([10, 20, 30]):
        want = st.t.interval(0.95, df=2, loc=a[:, j].mean(), scale=st.sem(a[:, j]))
        assert band[step] == pytest.approx(want, rel=1e-9)
    assert loss_ax.get_yscale() == "linear"


def test_runs_evaluated_once_get_a_point_and_interval_per_label(drawn):
    # eval_every = steps (the ResNet-18 proxy): one logged point per run; a line through it would not show
    agg = _agg()
    for info in agg["per_label"].values():
        for c in info["curves"]:
            c.update(step=[250], val_metric=c["val_metric"][-1:], train_loss=c["train_loss"][-1:])
    assert figures.fig_curves(agg, "unused")
    loss_ax = drawn[-1].axes[1]
    a = np.array(LOSS_A)[:, -1]
    # errorbar: the marker line holds the mean, the bar the t-interval of the seeds
    marks = [ln for ln in loss_ax.get_lines() if ln.get_marker() == "o"]
    assert len(marks) == 2 and marks[0].get_ydata()[0] == pytest.approx(a.mean())
    bar = [c for c in loss_ax.collections if isinstance(c, mcoll.LineCollection)][0].get_segments()[0]
    assert (bar[0][1], bar[1][1]) == pytest.approx(st.t.interval(0.95, df=2, loc=a.mean(), scale=st.sem(a)))
    assert "the only evaluation" in loss_ax.get_xlabel()


def test_a_diverged_run_gets_a_log_loss_axis_and_nonfinite_values_do_not_break_it(drawn):
    blown = [[2.0, 1e15, 1e31], [2.1, 1.4, 1.1], [1.9, None, float("inf")]]
    assert figures.fig_curves(_agg(loss_b=blown), "unused")
    fig = drawn[-1]
    assert fig.axes[1].get_yscale() == "log"
    assert fig.axes[0].get_yscale() == "linear"
    assert "2 non-finite loss values not drawn" in fig._suptitle.get_text()
    lines = [ln for ln in fig.axes[1].get_lines() if len(ln.get_ydata())]
    assert all(np.all(np.isfinite(np.asarray(ln.get_ydata(), float))) for ln in lines)
    # counted as diverged although every value is finite and small: still log
    figures.fig_curves(_agg(n_diverged=1), "unused")
    assert drawn[-1].axes[1].get_yscale() == "log"


def test_an_accuracy_band_outside_0_1_is_not_drawn_and_the_seeds_are(drawn):
    # two seeds learn, one fails (EnhancedSGD on MNIST): the t-interval at the last step reaches above 1
    agg = _agg()
    acc = [[0.50, 0.90, 0.98], [0.50, 0.92, 0.97], [0.50, 0.10, 0.10]]
    for c, v in zip(agg["per_label"]["b"]["curves"], acc):
        c["val_metric"] = v
    figures.fig_curves(agg, "unused")
    fig = drawn[-1]
    val_ax = fig.axes[0]
    polys = [c for c in val_ax.collections if isinstance(c, mcoll.PolyCollection)]
    assert all(p.get_paths()[0].vertices[:, 1].max() <= 1.0 for p in polys)
    seed_lines = [ln for ln in val_ax.get_lines() if ln.get_linewidth() == pytest.approx(0.4)]
    assert sorted(tuple(ln.get_ydata()) for ln in seed_lines) == sorted(map(tuple, acc))
    assert "outside the metric's range" in fig._suptitle.get_text()
    # a label whose band stays inside [0, 1] keeps its band and gets no seed lines
    figures.fig_curves(_agg(), "unused")
    assert not [ln for ln in drawn[-1].axes[0].get_lines() if ln.get_linewidth() == pytest.approx(0.4)]
    assert "thin lines" not in drawn[-1]._suptitle.get_text()


def test_title_counts_seeds_without_a_finite_curve(drawn):
    agg = _agg()
    agg["per_label"]["b"]["curves"][0].update(step=[], val_metric=[], train_loss=[])  # diverged, logged nothing
    figures.fig_curves(agg, "unused")
    assert "seeds with a finite validation curve: b 2 of 3" in drawn[-1]._suptitle.get_text()
    figures.fig_curves(_agg(), "unused")
    assert "finite validation curve" not in drawn[-1]._suptitle.get_text()


def test_band_drawable_rule():
    import pandas as pd
    b = pd.DataFrame({"ci_low": [-0.1, 0.2, 0.5, 0.0], "ci_high": [0.5, 0.9, 1.2, 1.0]})
    assert figures.band_drawable(b, False, (0.0, 1.0)).tolist() == [False, True, False, True]
    assert figures.band_drawable(b, True).tolist() == [False, True, True, False]
    assert figures.band_drawable(b, False).tolist() == [True] * 4


def test_needs_log_axis_rule():
    agg = _agg()
    assert not figures.needs_log_axis(agg, [0.1, 2.3, 50.0])
    assert figures.needs_log_axis(agg, [0.1, 1e31])
    assert figures.needs_log_axis(agg, [0.1, math.nan])
    assert figures.needs_log_axis(_agg(n_diverged=1), [0.1, 0.2])


def test_legend_is_outside_the_panels_with_one_colour_per_label(drawn):
    agg = _agg()
    agg["labels"] = [f"optimizer_{i}" for i in range(13)]
    base = agg["per_label"]["a"]
    agg["per_label"] = {lab: {**base, "curves": [{**c, "train_loss": [v * (1 + i) for v in c["train_loss"]]}
                                                for c in base["curves"]]}
                        for i, lab in enumerate(agg["labels"])}
    figures.fig_curves(agg, "unused")
    fig = drawn[-1]
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == agg["labels"]
    colours = {tuple(ln.get_color()) for ln in fig.axes[0].get_lines()[:13]}
    assert len(colours) == 13


def test_near_identical_curves_differ_in_dash_pattern_so_the_one_underneath_shows(drawn):
    # V6-G and AdamW at V6-G's effective lr end 0.05% apart: a solid line on a solid line hides one
    agg = _agg(loss_b=[[v * 1.0005 for v in row] for row in LOSS_A])
    figures.fig_curves(agg, "unused")
    a_line, b_line = [ln for ln in drawn[-1].axes[1].get_lines() if len(ln.get_ydata())][:2]
    assert a_line.get_linestyle() == "-" and b_line.get_linestyle() != "-"
    styles = figures.label_linestyles([f"l{i}" for i in range(6)])
    assert styles["l0"] != styles["l1"] != styles["l2"] != styles["l3"] and styles["l4"] == styles["l0"]


def test_sweep_log_axis_rule():
    # unbounded positive metrics spanning over 10x (perplexity 14,800 at lr 3e-5, 260 at the optimum)
    assert figures.sweep_needs_log_axis("perplexity", [14800.0, 2500.0, 260.0, 430.0])
    assert figures.sweep_needs_log_axis("recon_mse", [0.5, 0.02, float("nan")])
    assert not figures.sweep_needs_log_axis("perplexity", [300.0, 260.0, 430.0])  # under 10x
    assert not figures.sweep_needs_log_axis("accuracy", [0.05, 0.97])  # bounded metric: linear
    assert not figures.sweep_needs_log_axis("recon_mse", [0.0, 0.5])  # a zero cannot go on a log axis
    assert not figures.sweep_needs_log_axis("perplexity", [])


def test_a_label_repeating_another_labels_runs_is_drawn_once_under_both_names(drawn):
    # adamw_tuned whose tuning picked the published settings trains the published runs exactly
    agg = _agg()
    agg["labels"] = ["a", "b", "a_tuned"]
    agg["per_label"]["a_tuned"] = {**agg["per_label"]["a"]}
    figures.fig_curves(agg, "unused")
    fig = drawn[-1]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a = a_tuned", "b"]
    assert len([ln for ln in fig.axes[1].get_lines() if len(ln.get_ydata())]) == 2
    assert "identical runs, drawn once" in fig._suptitle.get_text()
    # one value apart (a NaN where the other has a number) is not identical: both drawn
    agg["per_label"]["a_tuned"] = {**agg["per_label"]["a"], "curves": [dict(c) for c in agg["per_label"]["a"]["curves"]]}
    agg["per_label"]["a_tuned"]["curves"][2]["train_loss"] = [1.8, 0.9, None]
    figures.fig_curves(agg, "unused")
    assert [t.get_text() for t in drawn[-1].legends[0].get_texts()] == ["a", "b", "a_tuned"]
    assert "identical runs" not in drawn[-1]._suptitle.get_text()


def test_erank_interval_is_the_aggregates_and_the_axis_does_not_start_at_zero(drawn):
    # an interval no per-seed computation would give: it must come from stats, not from the values
    figures.fig_erank(_agg(stats_b={"n": 3, "mean": 9.94, "ci_low": 9.90, "ci_high": 9.99}),
                      "unused", metrics=("seed_effective_rank",))
    ax = drawn[-1].axes[0]
    bars = [c for c in ax.collections if isinstance(c, mcoll.LineCollection)][0]
    spans = sorted(tuple(sorted((seg[0][0], seg[1][0]))) for seg in bars.get_segments())
    assert spans == [pytest.approx((9.90, 9.99)), pytest.approx((9.955, 9.965))]
    lo, hi = ax.get_xlim()
    assert lo > 9.0 and hi < 10.5  # zoomed: a 0.01 difference is a visible fraction of the axis
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]  # horizontal labels, one per row


def test_gradcam_grid_fits_a_page_with_its_caption(tmp_path):
    for n_images, n_opt in ((10, 6), (10, 13), (4, 2)):
        w, h = gc.grid_size(n_images, n_opt)
        assert w <= gc.GRID_MAX_IN[0] + 1e-9 and h <= gc.GRID_MAX_IN[1] + 1e-9
    with pytest.raises(ValueError, match="does not fit"):
        gc.grid_size(40, 30)
    rng = np.random.default_rng(0)
    maps = {f"label_{i}": rng.random((10, 8, 8)) for i in range(7)}
    out = gc.gradcam_grid(rng.random((10, 1, 8, 8)), maps, tmp_path / "grid.png")
    import matplotlib.image as mimg
    hgt, wid = mimg.imread(out).shape[:2]
    assert wid / 120 <= gc.GRID_MAX_IN[0] + 0.01 and hgt / 120 <= gc.GRID_MAX_IN[1] + 0.01


def test_results_section_caps_figure_size_and_lets_floats_share_pages():
    spec = importlib.util.spec_from_file_location("results_section", REPO / "analysis" / "results_section.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    grid = "\n".join(mod.figure_tex("g.pdf", "cap", "gradcam"))
    curves = "\n".join(mod.figure_tex("c.pdf", "cap", "curves"))
    assert r"\begin{figure}[htbp]" in curves and r"\caption{cap}" in grid
    assert r"max width=\linewidth,max height=0.6\textheight" in grid
    assert r"max height=0.45\textheight" in curves
    assert r"\renewcommand{\floatpagefraction}{0.75}" in mod.FLOAT_LAYOUT
    ms = (REPO / "paper" / "ms.tex").read_text()
    assert r"\usepackage[export]{adjustbox}" in ms and r"\usepackage{placeins}" in ms


def test_figure_script_creates_its_output_folder_when_nothing_is_plotted(tmp_path):
    # the GPT has no effective-rank metrics: the folder (a DVC / Snakemake directory output) must still exist
    out = tmp_path / "fig_erank"
    assert figures.script_main("erank", "erank", ["--results", str(REPO / "results" / "cpu_shakespeare"),
                                                  "--out", str(out)]) == 0
    assert out.is_dir() and not any(out.iterdir())
