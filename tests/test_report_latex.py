"""LaTeX tables, numbers.tex, figures and the analysis scripts on the synthetic tree."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from optirep.report import aggregate, claims, figures, latex
from optirep.report._io import write_json
from test_report_fixture import build_tree

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def agg(tmp_path):
    exp, res = build_tree(tmp_path)
    a = aggregate.aggregate_task(aggregate.load_experiment(exp), res, "clf")
    write_json(res / "aggregate" / "clf.json", a)
    return a


def test_escape_every_special_character():
    assert latex.escape("a_b & 50% $x$ #1 {y} ~z ^w \\v") == (
        r"a\_b \& 50\% \$x\$ \#1 \{y\} \textasciitilde{}z \textasciicircum{}w \textbackslash{}v")
    assert latex.escape(None) == ""


def test_main_table_has_n_in_caption_escaped_labels_and_diverged_count(agg):
    agg["labels"] = ["adamw", "bio"]
    tex = latex.main_table(agg)
    assert r"$n = 3$ seeds per optimizer" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and "reduced scale, CPU" in tex
    assert "82.00 $\\pm$ 2.00" in tex  # accuracy shown in percent
    assert "1/3" in tex  # bio's diverged run is reported
    # bio has the best mean and p_holm < 0.05 but a diverged run: not bold.
    assert r"\textbf" not in tex.split(r"\midrule")[1]


def test_bold_only_when_significant(agg):
    agg["per_label"]["bio"]["n_diverged"] = 0
    assert r"\textbf{90.50" in latex.main_table(agg)
    agg["comparisons"][0]["significant"] = False
    assert r"\textbf" not in latex.main_table(agg).split(r"\midrule")[1]


def test_label_with_underscore_is_escaped(agg):
    agg["per_label"]["bio_v6"] = agg["per_label"].pop("bio")
    agg["labels"] = ["adamw", "bio_v6"]
    agg["comparisons"][0]["method"] = "bio_v6"
    assert r"\texttt{bio\_v6}" in latex.main_table(agg)


def test_macro_names_are_letters_and_duplicates_fail():
    assert latex.macro_name("R", "cpu_vision", "resnet18", "final_test") == "RCpuVisionResnetOneEightFinalTest"
    m = latex.Macros()
    m.add(("a", "b1"), "1")
    with pytest.raises(ValueError, match="defined twice"):
        m.add(("A", "B1"), "2")
    tex = latex.numbers_tex(m)
    assert r"\newcommand{\ABOne}{1}" in tex
    with pytest.raises(ValueError, match="only letters"):
        latex.numbers_tex({"bad1": "x"})


def test_figures_are_written(agg, tmp_path):
    out = tmp_path / "figs"
    paths = (figures.fig_curves(agg, out / "curves") + figures.fig_lr_sensitivity(agg, out / "lr")
             + figures.fig_erank(agg, out / "erank"))
    assert sorted(p.name for p in paths) == sorted(
        ["curves.pdf", "curves.png", "lr.pdf", "lr.png", "erank.pdf", "erank.png"])
    assert all(p.stat().st_size > 1000 for p in paths)
    assert figures.fig_erank({**agg, "per_label": {}}, out / "none") == []
    # an aggregate of the old protocol (selected.json with trial_dir, no trial) still marks its selected trial
    frame = figures.lr_frame(agg)
    assert frame.groupby("optimizer")["selected"].sum().to_dict() == {"adamw": 1, "bio": 1}


def test_tuning_table_flags_an_optimum_at_the_edge(agg):
    tex = latex.tuning_table([agg])
    assert r"\label{tab:tuning}" in tex and r"\texttt{bio}" in tex
    old = json.loads(json.dumps(agg))
    old["per_label"]["bio"]["tuning"]["selected"] = {"hp": {"lr": 1e-4}, "trial_dir": "tune/clf/bio/trial0"}
    assert r"\textbf{no}: lower (sampled range)" in latex.tuning_table([old])
    assert latex.tuning_table([{**agg, "per_label": {}}]) == ""


def _run(script: str, *args: str) -> None:
    """Run analysis/<script>'s main(argv) in-process (a subprocess per script costs seconds of imports)."""
    spec = importlib.util.spec_from_file_location(f"analysis_{script[:-3]}", REPO / "analysis" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(list(args)) == 0


def test_analysis_scripts_build_a_paper_that_uses_only_macros(agg, tmp_path):
    res = tmp_path / "results" / "synth"
    cl = claims.load_claims(REPO / "experiments" / "claims.yaml")
    write_json(tmp_path / "results" / "claims.json", claims.evaluate(cl, tmp_path / "results"))
    gen = tmp_path / "paper" / "generated"
    cj = str(tmp_path / "results" / "claims.json")
    _run("table_main.py", "--results", str(res), "--out", str(gen / "synth" / "table_main.tex"))
    _run("table_protocol.py", "--results", str(res), "--out", str(gen / "protocol.tex"))
    _run("table_claims.py", "--claims", cj, "--out", str(gen / "claims_table.tex"))
    _run("fig_forest.py", "--claims", cj, "--out", str(gen / "fig_forest"))
    _run("numbers_tex.py", "--results", str(res), "--claims", cj, "--out", str(gen / "numbers.tex"))
    _run("results_section.py", "--results", str(res), "--out", str(gen / "results.tex"))
    numbers = (gen / "numbers.tex").read_text()
    assert r"\newcommand{\ClaimsTotal}{27}" in numbers and r"\newcommand{\RSynthClfBioFinalTestMean}{90.50}" in numbers
    section = (gen / "claims_section.tex").read_text()
    assert section.count(r"\paragraph{") == 27 and "Not run here: needs CIFAR-100" in section
    ms = (REPO / "paper" / "ms.tex").read_text()
    body = "\n".join(line.split("%")[0] for line in ms.splitlines())
    # A digit not glued to a word (BiostatisV6 is a name) is a hand-typed number.
    assert not re.search(r"(?<![A-Za-z])\d", re.sub(r"\\(input|ref|label)\{[^}]*\}|\[[^\]]*\]|\{\d+pt\}", "", body)), \
        "ms.tex must not contain hand-typed numbers"
    assert (gen / "limitations.tex").exists() and (gen / "conclusion.tex").exists() and (gen / "fig_forest.pdf").exists()
    for macro in re.findall(r"\\((?:Claims|Study|Replication)[A-Za-z]+)", ms):
        assert rf"\newcommand{{\{macro}}}" in numbers, macro
    if shutil.which("latexmk") and shutil.which("pdflatex"):
        shutil.copy(REPO / "paper" / "ms.tex", tmp_path / "paper" / "ms.tex")
        r = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "ms.tex"],
                           cwd=tmp_path / "paper", capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:]
        assert (tmp_path / "paper" / "ms.pdf").stat().st_size > 10_000


def test_limitations_count_measured_pending_and_unavailable_claims_apart():
    q = {"verdict": "inconclusive", "planned_n": 10, "experiment": "e", "task": "t"}
    recs = [
        {"id": "NP-1", "verdict": "inconclusive", "scale": "seed scale, CPU", "proxy": "the seed's setup on CPU",
         "questions": {"attribution": q}, "why": "w"},
        {"id": "PW-1", "verdict": "not run", "questions": {"attribution": {"verdict": "not run", "planned_n": 5}},
         "why": "no results yet for e/t (aggregate/t.json absent)"},
        {"id": "V6-3", "verdict": "not run", "why": "needs CIFAR-100"},
    ]
    text = latex.limitations_section({"claims": recs})
    scale = text.split(r"\paragraph{Proxies.}")[0]
    assert "at seed scale, CPU: 1 claims with 10 seeds per arm" in scale
    assert "1 claims whose test is specified have no results here (PW-1)" in scale
    assert "1 claims were not run (V6-3): their data" in scale
    assert "PW-1:" not in text.split(r"\paragraph{Proxies.}")[1]  # a claim without results has no stand-in to describe


def test_conclusion_counts_claims_judged_by_their_own_test_apart_from_derived_ones():
    # V6-13 is judged from V6-9/V6-10/V6-11 (`parts`, no questions of its own): the conclusion's total
    # must add up to the limitations' count of measured claims plus the derived ones
    q = {"verdict": "inconclusive", "planned_n": 10, "experiment": "e", "task": "t"}
    recs = [
        {"id": "V6-9", "optimizer": "BiostatisV6", "verdict": "not replicated", "scale": "reduced scale, CPU",
         "questions": {"attribution": q}, "why": "w"},
        {"id": "V6-13", "optimizer": "BiostatisV6", "verdict": "not replicated", "parts": ["V6-9"], "why": "w"},
        {"id": "V6-3", "optimizer": "BiostatisV6", "verdict": "not run", "why": "needs CIFAR-100"},
    ]
    claims_doc = {"claims": recs, "n_claims": 3, "counts": {"not replicated": 2, "not run": 1}}
    text = latex.conclusion_section(claims_doc)
    assert "Of 3 claims, 2 have a verdict here (1 from a test of their own" in text
    assert "1 derived from other claims' verdicts: V6-13)" in text
    assert "at reduced scale, CPU: 1 claims" in latex.limitations_section(claims_doc)
    recs.pop(1)
    assert "Of 3 claims, 1 has a verdict here. Headline" in latex.conclusion_section(claims_doc)
