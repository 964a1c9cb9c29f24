"""LaTeX snippets from aggregate and claims JSON: booktabs tables, the claims section, numbers.tex.

Used by the scripts in analysis/ (each writes one artifact into paper/generated/). Nothing here
computes a statistic: it formats what optirep.report.aggregate and .claims wrote.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from optirep.analysis.stats import CHANCE_MARGIN
from optirep.report import claim_text as ct
from optirep.report._io import as_float
from optirep.report.aggregate import run_failures

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))


def escape(text: Any) -> str:
    """Text safe for LaTeX's text mode (the ten special characters and < >)."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], "" if text is None else str(text))


# How each quantity is shown: (scale factor, unit suffix for the header, significant decimals).
DISPLAY = {
    "accuracy": (100.0, r"\%", 2),
    "perplexity": (1.0, "", 2),
    "recon_mse": (1.0, "", 4),
    "pixel_accuracy": (100.0, r"\%", 2),
    "miou": (100.0, r"\%", 2),
    "time_per_step_s": (1000.0, "ms", 1),
    "time_per_opt_step_s": (1000.0, "ms", 2),
    "optimizer_state_bytes": (1.0 / 2**20, "MiB", 2),
    "peak_memory_bytes": (1.0 / 2**20, "MiB", 1),
}


def fmt(x: Any, decimals: int = 2, factor: float = 1.0) -> str:
    """A number for a table cell; NaN/None as an en dash."""
    v = as_float(x)
    if not math.isfinite(v):
        return "--"
    v *= factor
    if v != 0 and abs(v) < 10 ** (-decimals):
        return f"{v:.{max(decimals, 1)}g}"
    return f"{v:.{decimals}f}"


def fmt_pm(mean: Any, std: Any, decimals: int = 2, factor: float = 1.0) -> str:
    """mean $\\pm$ std (std omitted when undefined, e.g. n = 1)."""
    m, s = fmt(mean, decimals, factor), fmt(std, decimals, factor)
    return m if s == "--" else f"{m} $\\pm$ {s}"


def display_for(metric: str, task_metric: str | None = None) -> tuple[float, str, int]:
    if metric in ("final_test", "final_val", "best_val") and task_metric:
        return DISPLAY.get(task_metric, (1.0, "", 3))
    return DISPLAY.get(metric, (1.0, "", 3))


def _n_text(agg: dict) -> str:
    ns = sorted({info["n_runs"] for info in agg["per_label"].values()})
    if len(ns) == 1:
        return f"$n = {ns[0]}$ seeds per optimizer"
    return f"$n = {ns[0]}$ to ${ns[-1]}$ seeds per optimizer (per row: column $n$)"


def _bold_label(agg: dict) -> str | None:
    """The label whose final_test is bold: best mean, significantly better, and no diverged run."""
    comps = {c["method"]: c for c in agg["comparisons"]}
    hib = agg["higher_is_better"]
    means = {lab: as_float(info["stats"].get("final_test", {}).get("mean")) for lab, info in agg["per_label"].items()}
    finite = {k: v for k, v in means.items() if math.isfinite(v)}
    if not finite:
        return None
    best = (max if hib else min)(finite, key=finite.get)
    if agg["per_label"][best]["n_diverged"]:
        return None
    if best == agg["baseline"]:
        ok = comps and all(c.get("significant") and c.get("better") is False for c in comps.values())
    else:
        c = comps.get(best, {})
        ok = bool(c.get("significant") and c.get("better"))
    return best if ok else None


def main_table(agg: dict, label: str | None = None) -> str:
    """One booktabs table for one task: mean $\\pm$ std per optimizer, comparison with the baseline."""
    metric = agg["metric"]
    fac, unit, dec = display_for("final_test", metric)
    tfac, tunit, tdec = DISPLAY["time_per_step_s"]
    mfac, munit, mdec = DISPLAY["optimizer_state_bytes"]
    bold = _bold_label(agg)
    comps = {c["method"]: c for c in agg["comparisons"]}
    arrow = r"$\uparrow$" if agg["higher_is_better"] else r"$\downarrow$"
    unit_txt = f" ({unit})" if unit else ""
    lines = [
        r"\begin{table}[htbp]", r"\centering", r"\small",
        rf"\caption{{{escape(agg['experiment'])} / {escape(agg['task'])} ({escape(agg['scale'])}): "
        rf"final-step test {escape(metric)}{unit_txt} {arrow}, mean $\pm$ std over {_n_text(agg)}. "
        rf"$\Delta$: difference to the baseline \texttt{{{escape(agg['baseline'])}}} with its 95\% Welch interval; "
        rf"$p_\mathrm{{Holm}}$: Welch $p$ Holm-adjusted over the {len(agg['comparisons'])} comparisons of this task; "
        rf"$g$: Hedges' $g$. Bold: best and significantly better ($p_\mathrm{{Holm}} < {agg.get('alpha', 0.05):g}$). "
        rf"Failed: runs that diverged, ended above their initial train loss or within {100 * CHANCE_MARGIN:g}\,pp of chance "
        rf"(diverged ones in parentheses), counted, not dropped. Baseline gate: {escape(agg['gate'].get('reason'))}.}}",
        rf"\label{{{label or 'tab:' + agg['experiment'] + ':' + agg['task']}}}",
        r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{lrrrrrrrr}", r"\toprule",
        rf"optimizer & $n$ & test{unit_txt} & best val & time/step ({tunit}) & opt.\ state ({munit}) & "
        r"failed (div.) & $\Delta$ [95\% CI] & $p_\mathrm{Holm}$ / $g$ \\", r"\midrule",
    ]
    for lab in agg["labels"]:
        info = agg["per_label"][lab]
        st = info["stats"]
        cell = fmt_pm(st.get("final_test", {}).get("mean"), st.get("final_test", {}).get("std"), dec, fac)
        if lab == bold:
            cell = rf"\textbf{{{cell}}}"
        if lab == agg["baseline"]:
            delta, pg = "baseline", ""
        elif lab in comps:
            c = comps[lab]
            delta = f"{fmt(c['diff'], dec, fac)} [{fmt(c['ci_low'], dec, fac)}, {fmt(c['ci_high'], dec, fac)}]"
            pg = f"{fmt(c.get('p_holm'), 3)} / {fmt(c.get('hedges_g'), 2)}"
        else:
            delta, pg = "--", ""
        lines.append(
            rf"\texttt{{{escape(lab)}}} & {info['n_runs']} & {cell} & "
            rf"{fmt_pm(st.get('best_val', {}).get('mean'), st.get('best_val', {}).get('std'), dec, fac)} & "
            rf"{fmt(st.get('time_per_step_s', {}).get('mean'), tdec, tfac)} & "
            rf"{fmt(st.get('optimizer_state_bytes', {}).get('mean'), mdec, mfac)} & "
            rf"{sum(r is not None for r in run_failures(agg, lab))}/{info['n_runs']} ({info['n_diverged']}) & {delta} & {pg} \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def _tuning_cell(agg: dict) -> str:
    """The tuning protocol of a task in one cell: tuning seeds and the budget per tuned label."""
    t = agg.get("tuning") or {}
    if not any(info.get("tuning") for info in agg["per_label"].values()):
        return "none"  # no tuned optimizer in this task
    if "budget" in t:
        return (f"{len(t.get('seeds', []))} seeds, {t['budget']} runs "
                f"({t.get('lr_sweep', {}).get('per_decade', '?')}/decade sweep + {t.get('random_trials', 0)} random)")
    return f"{t.get('trials', 0)} trials, seed {t.get('seed', 0)}"


def protocol_table(aggs: Iterable[dict]) -> str:
    """Experiment, scale label, seeds, tuning budget and gate of every aggregated task."""
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\caption{Protocol of every task reported here: scale label, final-run seeds, tuning protocol (tuning seeds "
        r"and the budget of training runs per tuned optimizer, the same for every optimizer, baselines included: an "
        r"LR sweep with the stated points per decade, extended until its best point is interior, then quasi-random "
        r"trials; selected on the mean validation metric over the tuning seeds; older studies: single-seed "
        r"quasi-random trials), step budget, baseline sanity gate, and the compute spent (sum of the wall times of "
        r"final runs and tuning runs, in minutes, on the device the scale column names).}",
        r"\label{tab:protocol}",
        r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{lllllllr}", r"\toprule",
        r"experiment & task & scale & seeds & tuning (per tuned optimizer) & budget & gate (baseline, bound, passed) "
        r"& compute (min) \\",
        r"\midrule",
    ]
    for agg in aggs:
        g = agg["gate"]
        bound = ", ".join(f"{k} {g[k]}" for k in ("min", "max") if k in g) or "none"
        gate = f"\\texttt{{{escape(g.get('optimizer', agg['baseline']))}}}, {escape(bound)}, " + ("yes" if agg["gate_passed"] else r"\textbf{no}")
        budget = ", ".join(f"{k} {v}" for k, v in (agg.get("budget") or {}).items())
        comp = as_float((agg.get("compute_s") or {}).get("total"))
        comp = f"{comp / 60:.1f}" if math.isfinite(comp) else "--"
        lines.append(rf"{escape(agg['experiment'])} & {escape(agg['task'])} & {escape(agg['scale'])} & "
                     rf"{len(agg['seeds'])} & {_tuning_cell(agg)} & {escape(budget)} & {gate} & {comp} \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def _lr(x: Any) -> str:
    v = as_float(x)
    return f"{v:.2g}" if math.isfinite(v) else "--"


def tuning_table(aggs: Iterable[dict]) -> str:
    """Every tuned optimizer: LR range swept, whether the optimum was bracketed, the selected lr (raw and
    effective = lr x measured gain), and the runs used against the stated budget. Empty when nothing was tuned."""
    from optirep.report.aggregate import tuning_view

    rows = []
    for agg in aggs:
        for label, info in agg["per_label"].items():
            v = tuning_view(info.get("tuning"))
            if v is None:
                continue
            sweep = v["sweep"]
            if sweep:
                lo, hi = sweep.get("lr_interval") or [None, None]
                ext = sweep.get("n_points", 0) - sweep.get("initial_points", 0)
                swept = f"{_lr(lo)}--{_lr(hi)} ({sweep.get('n_points')} pts, +{ext})"
                runs = f"{v['selected'].get('runs', '--')}/{sweep.get('budget', '--')}"
            else:
                lrs = [as_float((t.get("hp") or {}).get("lr")) for t in v["trials"]]
                lrs = [x for x in lrs if math.isfinite(x)]
                swept = f"{_lr(min(lrs))}--{_lr(max(lrs))} ({len(lrs)} random)" if lrs else "--"
                runs = f"{len(v['trials'])}/{(agg.get('tuning') or {}).get('trials', '--')}"
            bracket = "yes" if not v["edge"] else rf"\textbf{{no}}: {v['edge']} ({escape(v['bound_hit'])})"
            gain = v["gain"]
            eff = f"{_lr(v['effective_lr'])} (x{gain:.3g})" if math.isfinite(gain) and gain != 1.0 else _lr(v["effective_lr"])
            rows.append(rf"{escape(agg['experiment'])} & {escape(agg['task'])} & \texttt{{{escape(label)}}} & "
                        rf"{escape(swept)} & {bracket} & {_lr(v['lr'])} & {escape(eff)} & {escape(runs)} \\")
    if not rows:
        return ""
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\caption{Tuning of every tuned optimizer: learning rates swept (grid points, + extension points), whether "
        r"the optimum was bracketed (no: the best point sits at the lower or upper end, and what stopped the "
        r"search), the selected learning rate, the same in effective units (lr times the step gain the optimizer "
        r"logged, e.g. BiostatisV6's $h \cdot e$; -- where not measured), and training runs used / budget.}",
        r"\label{tab:tuning}",
        r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{llllllll}", r"\toprule",
        r"experiment & task & optimizer & lr swept & bracketed & selected lr & effective lr & runs \\", r"\midrule",
        *rows, r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""])


def _ours(rec: dict) -> str:
    """Method vs baseline, mean $\\pm$ std, in the display units of the tested metric (accuracy in %)."""
    if "mean_method" not in rec:
        return "--"
    fac, unit, dec = display_for(rec.get("test_metric") or rec.get("metric") or "", rec.get("task_metric"))
    if fac == 1.0 and unit == "" and dec == 3:
        dec = 4
    unit = f" {unit}" if unit else ""
    return (rf"{fmt_pm(rec['mean_method'], rec.get('std_method'), dec, fac)} vs "
            rf"{fmt_pm(rec['mean_baseline'], rec.get('std_baseline'), dec, fac)}{unit} "
            rf"($n$={rec.get('n_method')}/{rec.get('n_baseline')})")


def _verdict_tex(v: str | None, bold: bool = False) -> str:
    t = escape(v or "--")
    return rf"\textbf{{{t}}}" if bold else t


def _breakable(label: Any) -> str:
    """An escaped label that may break after its underscores, and a variant `label[key=value,...]` also
    after its `[` and commas (long labels in narrow columns)."""
    out = escape(label).replace(r"\_", r"\_\allowbreak{}")
    return out.replace("[", r"[\allowbreak{}").replace(",", r",\allowbreak{}")


def _breakable_path(text: Any) -> str:
    """Like `_breakable`, also breaking after slashes (a repository path in running text)."""
    return _breakable(text).replace("/", r"/\allowbreak{}")


def claims_table(claims: dict) -> str:
    """Every claim in one longtable: a header row (id, statement, headline verdict), then one row per
    question: seed settings (a), equal tuning (b) and the LR-matched control (b), each with its
    comparison, effect and 90% interval, claimed effect and SESOI, n / failures / test / p, verdict."""
    cols = (0.12, 0.19, 0.16, 0.14, 0.19, 0.13)  # + 10 column gaps of 3pt (30pt): under \linewidth
    head = (rf"question & comparison & effect [{100 * (1 - 2 * claims['alpha']):g}\% CI] & claimed; SESOI & "
            r"$n$, failed, test, $p$ & verdict \\")
    lines = [
        r"\begin{small}", r"\setlength{\tabcolsep}{3pt}", r"\setlength{\LTcapwidth}{\linewidth}",
        "\\begin{longtable}{@{}" + "".join(rf">{{\raggedright\arraybackslash}}p{{{w}\linewidth}}" for w in cols) + "@{}}",
        rf"\caption{{Every claim and both questions (Section~\ref{{sec:claims}}): (a) the seed's own settings against its "
        rf"baseline; (b) equal tuning and the learning-rate-matched control, whose combined verdict is the headline "
        rf"(bold). Effects are method vs baseline in the metric's own direction (accuracy in pp, ratios as method/baseline) "
        rf"with the {100 * (1 - 2 * claims['alpha']):g}\% interval (the one-sided {100 * (1 - claims['alpha']):g}\% bounds); one-sided tests at $\alpha = {claims['alpha']:g}$, "
        rf"$p$ of (b) Holm-adjusted across the study's {claims.get('holm_family_size', '?')} primary tests; "
        r"failed = runs that diverged, ended above their initial loss or at chance (method/baseline). "
        r"$\dagger$: runs from different commits or uncommitted code; $\ddagger$: unequal tuning.}"
        r"\label{tab:claims}\\",
        r"\toprule", head, r"\midrule", r"\endfirsthead",
        r"\toprule", head, r"\midrule", r"\endhead",
        r"\bottomrule", r"\endfoot",
    ]
    for rec in claims["claims"]:
        qs = rec.get("questions") or {}
        headline = _verdict_tex(rec["verdict"], bold=True)
        fs = rec.get("full_scale")
        if fs and fs["verdict"] != "not run":
            headline += rf"; full scale ({escape(fs.get('scale'))}): {escape(fs['verdict'])}"
        scale = escape(rec.get("scale") or "--")
        lines.append(rf"\multicolumn{{6}}{{@{{}}p{{\linewidth}}@{{}}}}{{\textbf{{{escape(rec['id'])}}} "
                     rf"{escape(rec['statement'])} \emph{{Seed: {escape((rec.get('seed_value') or {}).get('text'))}.}} "
                     rf"Headline: {headline} ({scale}).}} \\*")
        if not qs:
            why = _breakable_path(rec.get("why"))
            lines.append(rf"\multicolumn{{6}}{{@{{}}p{{\linewidth}}@{{}}}}{{\quad {why}}} \\ \midrule")
            continue
        for key, name in ct.QUESTIONS:
            q = qs.get(key)
            if not q:
                if key != "attribution":
                    lines.append(rf"{escape(name)} & \multicolumn{{5}}{{l}}{{none in this study}} \\*")
                continue
            mark = ""
            if (q.get("provenance") or {}).get("flags"):
                mark += r"$^\dagger$"
            if q.get("equal_tuning") is False:
                mark += r"$^\ddagger$"
            comp = rf"\texttt{{{_breakable(q.get('method'))}}} vs \texttt{{{_breakable(q.get('baseline'))}}}{mark}"
            if q.get("interaction_with"):
                comp += rf" ({escape(q['task'])} minus {escape(q['interaction_with']['task'])})"
            label = escape(name) + (" (a)" if key == "replication" else " (b)")
            if "n_method" not in q:
                lines.append(rf"{label} & {comp} & \multicolumn{{4}}{{>{{\raggedright\arraybackslash}}p{{0.6\linewidth}}}}"
                             rf"{{{_breakable_path(ct.verdict_text(q))}}} \\*")
                continue
            lines.append(rf"{label} & {comp} & {escape(ct.effect_text(q))} & {escape(ct.target_text(q))} & "
                         rf"{escape(ct.stats_text(q))} & {_verdict_tex(q.get('verdict'), bold=key == 'attribution')} \\*")
        lines[-1] = lines[-1].removesuffix(r" \\*") + r" \\ \midrule"
    lines += [r"\end{longtable}", r"\end{small}", ""]
    return "\n".join(lines)


def _s(text: Any) -> str:
    """Escaped text without a trailing period (the template adds its own), breakable after `/` and `_`
    (the reasons name result files)."""
    return _breakable_path(str(text or "").strip().rstrip("."))


def _question_text(name: str, q: dict) -> str:
    """One question's measurement, verdict and reason, as a sentence."""
    if "n_method" not in q:
        return rf"{escape(name)}: \emph{{{escape(q.get('verdict'))}}} ({_s(q.get('why'))})."
    note = rf"; {_s(q['note'])}" if q.get("note") else ""
    text = (rf"{escape(name)} (\texttt{{{_breakable(q['method'])}}} vs \texttt{{{_breakable(q['baseline'])}}} on "
            rf"{escape(q['experiment'])}/{escape(q['task'])}, {escape(q['metric'])}; {escape(q.get('tuning'))}{note}): "
            rf"{_ours(q)}; effect {escape(ct.effect_text(q))} ({escape(ct.target_text(q))}; {escape(ct.stats_text(q))}); "
            rf"verdict \textbf{{{escape(q['verdict'])}}} ({_s(q.get('why'))}).")
    fails = (q.get("method_failures") or []) + (q.get("baseline_failures") or [])
    if fails:
        text += rf" Failed runs: {escape('; '.join(sorted(set(fails))))}."
    pw = q.get("power") or {}
    if math.isfinite(as_float(pw.get("mde"))):
        need = pw.get("n_needed")
        text += (rf" Power: minimum detectable effect at $n = {pw['n']}$ is {escape(_g(pw['mde'], q))}; "
                 rf"the SESOI needs {need if need is not None else 'more than 100000'} seeds per arm.")
    fl = (q.get("provenance") or {}).get("flags")
    if fl:
        text += rf" Provenance: {_s('; '.join(fl))}."
    return text


def _g(x: float, q: dict) -> str:
    """A test-scale quantity (difference or log ratio) in the comparison's display units."""
    n = ct.natural({**q, "estimate": x, "ci_low": x, "ci_high": x, "sign": 1.0})
    if n["kind"] == "ratio":
        return f"{n['effect']:.3g}x"
    return f"{n['effect']:.3g}" + (" pp" if ct._unit(q)[1] else "")


def claims_section(claims: dict) -> str:
    """One paragraph per claim: statement, seed value and source, carry-over, each question, full scale."""
    out = []
    for rec in claims["claims"]:
        sv = rec.get("seed_value") or {}
        parts = [rf"\paragraph{{{escape(rec['id'])} ({escape(rec['optimizer'])}).}} {_s(rec['statement']) + '.'}",
                 rf"Seed: {escape(sv.get('text'))}; setup: {_s(rec.get('setup'))}; source: \texttt{{{_breakable_path(rec.get('source'))}}}."]
        v, qs = rec["verdict"], rec.get("questions") or {}
        if "parts" in rec:
            parts.append(rf"Verdict: \textbf{{{escape(v)}}} ({_s(rec.get('why'))}).")
        elif not qs:
            parts.append(rf"\emph{{Not run here: {_s(rec.get('why'))}.}}")
        else:
            a = qs["attribution"]
            if a.get("carry_over"):
                parts.append(rf"Claimed effect in our units: {_s(a['carry_over'])}; SESOI: {_s(a.get('sesoi_rule'))}.")
            if rec.get("proxy"):
                parts.append(rf"Proxy: {_s(rec['proxy'])}.")
            if rec.get("interaction"):
                parts.append(rf"Tested as an interaction: {_s(rec['interaction']['why'])}.")
            for key, name in ct.QUESTIONS:
                if key in qs:
                    parts.append(_question_text(name.capitalize() + (" (a)" if key == "replication" else " (b)"), qs[key]))
            parts.append(rf"Headline verdict (b): \textbf{{{escape(v)}}} ({_s(rec.get('why'))}).")
        fs = rec.get("full_scale")
        if fs and fs["verdict"] == "not run":
            parts.append(rf"At full scale ({escape(fs['experiment'])}/{escape(fs['task'])}): \emph{{not run here: {_s(fs.get('why'))}.}}")
        elif fs and fs["verdict"] == "baseline failed":
            parts.append(rf"At full scale: \textbf{{baseline failed}} ({_s(fs.get('why'))}).")
        elif fs:
            parts.append("At full scale: " + _question_text("equal tuning", fs))
        cost = (fs or {}).get("cost")
        if cost:
            hours = f"{cost['cpu_hours']:,.{0 if cost['cpu_hours'] >= 10 else 1}f}"  # 204, but 0.1 (not 0)
            parts.append(
                rf"Full-scale cost: up to {cost['runs']} runs (final runs and each tuned label's tuning budget) "
                rf"$\times$ {cost['steps_per_run']:,} steps at batch "
                rf"{cost['batch_size']}; at the {1e3 * cost['s_per_example']:.2g}\,ms per training example measured "
                rf"here ({escape(cost['measured_on'])}, this CPU) that is about {hours} CPU-hours "
                r"(an extrapolation that assumes cost proportional to examples; GPU time was not measured here).")
        est = rec.get("gpu_estimate") or (fs or {}).get("gpu_estimate")
        if est:
            parts.append(rf"GPU estimate at full scale (optirep's, from the experiment file; not measured): {_s(est)}.")
        out.append(" ".join(parts))
    return "\n\n".join(out) + "\n"


def _ids(recs: list[dict]) -> str:
    return ", ".join(escape(r["id"]) for r in recs) or "none"


def limitations_section(claims: dict) -> str:
    """Scale, proxies, what each "not replicated" does and does not say: generated from the records."""
    recs = [r for r in claims["claims"] if r.get("questions") and r["verdict"] != "not run"]
    scales = sorted({r.get("scale") for r in recs if r.get("scale")})
    not_run = [r for r in claims["claims"] if r["verdict"] == "not run"]
    pending = [r for r in not_run if r.get("questions")]  # a test is specified; its results are not (yet) here
    unavailable = [r for r in not_run if not r.get("questions")]
    scale = (rf"\paragraph{{Scale.}} Every measured verdict here is at {escape('; '.join(scales) or 'no scale')}: "
             rf"{len(recs)} claims with {_range_n(recs)} seeds per arm (seed scale: the seed's own data, model and "
             r"training length; reduced scale: a proxy of its setup, described below).")
    if pending:
        scale += (rf" {len(pending)} claims whose test is specified have no results here ({_ids(pending)}): their "
                  r"experiment has not run yet, or ran under an earlier design (each reason is in Section~\ref{sec:claims}).")
    if unavailable:
        scale += (rf" {len(unavailable)} claims were not run ({_ids(unavailable)}): their data, hardware or setup was "
                  r"not available; the full-scale GPU study that would test them is specified but not run.")
    out = [r"\section{Limitations}\label{sec:limitations}", scale]
    proxies = [r for r in recs if r.get("proxy")]
    if proxies:
        items = "; ".join(rf"{escape(r['id'])}: {_s(r['proxy'])}" for r in proxies)
        out.append(rf"\paragraph{{Proxies.}} What each claim is measured on ({items}). Where that is a stand-in "
                   r"for the seed's setting, a verdict is about the stand-in; the carry-over rule of each claim states "
                   r"how the seed's effect was translated into the stand-in's units.")
    invalid = [r for r in recs if r["verdict"] == "not tested (proxy invalid)"]
    if invalid:
        out.append(r"\paragraph{Proxies that fail their validity gate.} " + " ".join(
            rf"{escape(r['id'])}: {_s(r['why'])}." for r in invalid))
    unt = [r for r in recs if r["verdict"] == "untestable at this scale"]
    if unt:
        out.append(r"\paragraph{Claims this scale cannot test.} " + " ".join(
            rf"{escape(r['id'])}: {_s(r['questions']['attribution'].get('power', {}).get('untestable') or r['why'])}."
            for r in unt))
    nrep = [r for r in recs if r["verdict"] == "not replicated"]
    if nrep:
        out.append(r"\paragraph{What ``not replicated'' says and does not say.} " + " ".join(
            rf"{escape(r['id'])} says that on {escape(r['questions']['attribution'].get('experiment'))}/"
            rf"{escape(r['questions']['attribution'].get('task'))} {_s(r['why'])}; it does not say that the effect is "
            rf"absent in the seed's own setting ({_s(r.get('setup'))})." for r in nrep))
    flagged = [r for r in recs if any(ct.flags(q) for q in r["questions"].values())]
    if flagged:
        out.append(rf"\paragraph{{Provenance.}} The comparisons of {len(flagged)} claims ({_ids(flagged)}) mix runs from "
                   r"different commits, from uncommitted code or from different code paths of one optimizer, or "
                   r"compare unequally tuned arms (each marked in Table~\ref{tab:claims} with its reason).")
    return "\n\n".join(out) + "\n"


def _range_n(recs: list[dict]) -> str:
    ns = sorted({q.get("planned_n") for r in recs for q in r["questions"].values() if q.get("planned_n")})
    return "--" if not ns else (str(ns[0]) if len(ns) == 1 else f"{ns[0]}--{ns[-1]}")


def conclusion_section(claims: dict) -> str:
    """Per optimizer: the headline verdicts and the seed-settings verdicts, from the records."""
    by_opt: dict[str, list[dict]] = {}
    for r in claims["claims"]:
        by_opt.setdefault(r["optimizer"].split(" (")[0], []).append(r)
    decided = [r for r in claims["claims"] if r["verdict"] != "not run"]
    derived = [r for r in decided if not r.get("questions")]  # judged from other claims' verdicts (`parts`)
    lines = [r"\section{Conclusion}\label{sec:conclusion}",
             rf"Of {claims['n_claims']} claims, {len(decided)} {'has' if len(decided) == 1 else 'have'} a verdict here"
             + (rf" ({len(decided) - len(derived)} from a test of their own, as counted in Section~\ref{{sec:limitations}}, "
                rf"and {len(derived)} derived from other claims' verdicts: {_ids(derived)})" if derived else "")
             + r". Headline verdicts (b): " + escape(", ".join(f"{n} {v}" for v, n in claims["counts"].items() if n)) +
             r". With the seeds' own settings (a): " +
             escape(", ".join(f"{n} {v}" for v, n in (claims.get("replication_counts") or {}).items() if n) or "none") + ".",
             r"\begin{itemize}"]
    for opt, recs in by_opt.items():
        groups: dict[str, list[str]] = {}
        for r in recs:
            groups.setdefault(r["verdict"], []).append(r["id"])
        reps = [r for r in recs if (r.get("replication_verdict") or "").startswith("replicated")]
        text = "; ".join(f"{v}: {', '.join(ids)}" for v, ids in groups.items())
        item = rf"\item \textbf{{{escape(opt)}}}: {escape(text)}."
        if reps:
            item += (rf" Replicated with the seed's own settings: {_ids(reps)}" +
                     (r", of which under equal tuning and the LR-matched control: " +
                      _ids([r for r in reps if r["verdict"].startswith("replicated")]) + "."))
        lines.append(item)
    lines += [r"\end{itemize}", ""]
    return "\n".join(lines)


_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


def macro_name(*parts: Any) -> str:
    """A LaTeX command name (letters only) from parts: ('cpu_vision', 'resnet18') -> CpuVisionResnetOneEight."""
    words = []
    for part in parts:
        for tok in re.split(r"[^A-Za-z0-9]+", str(part)):
            # camelCase parts stay words: "FinalTestMean" -> Final Test Mean, "PHolm" -> P Holm.
            for piece in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]", tok):
                words.append(_DIGITS[int(piece)] if piece.isdigit() else piece[:1].upper() + piece[1:].lower())
    name = "".join(words)
    if not name:
        raise ValueError(f"macro_name: no letters or digits in {parts!r}")
    return name


class Macros(dict):
    """name -> TeX value; `add` refuses a name given twice (two numbers would share one macro)."""

    def add(self, parts: tuple | str, value: str) -> str:
        name = macro_name(*parts) if isinstance(parts, tuple) else parts
        if name in self:
            raise ValueError(f"macro \\{name} defined twice (from {parts!r}); rename one of the labels")
        self[name] = value
        return name


def numbers_tex(macros: dict[str, str], header: str = "") -> str:
    """\\newcommand lines for `macros` (name -> already formatted TeX); duplicate names are an error."""
    lines = ["% Generated: every number the text uses. Do not edit; re-run analysis/numbers_tex.py."]
    if header:
        lines.append(f"% {header}")
    for name, value in macros.items():
        if not re.fullmatch(r"[A-Za-z]+", name):
            raise ValueError(f"macro name {name!r}: only letters are allowed in a LaTeX command name")
        lines.append(rf"\newcommand{{\{name}}}{{{value}}}")
    return "\n".join(lines) + "\n"
