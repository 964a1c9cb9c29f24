"""README claims section: render, update, and --check catching a stale README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optirep.report import readme

def _q(verdict, est, p_holm=None, **over):
    q = {"verdict": verdict, "method": "bio", "baseline": "adamw", "metric": "final_test", "task_metric": "accuracy",
         "n_method": 3, "n_baseline": 3, "n_method_failed": 1, "n_baseline_failed": 0, "sign": 1.0,
         "effect_scale": "difference", "estimate": est, "ci_low": est - 0.01, "ci_high": est + 0.01,
         "sesoi": 0.02, "claimed_effect": 0.04, "test": "paired t", "p_primary": 0.004, "p_kind": "superiority",
         "provenance": {"flags": []}, "equal_tuning": True}
    if p_holm is not None:
        q["p_holm"] = p_holm
    q.update(over)
    return q


CLAIMS = {
    "alpha": 0.05, "n_claims": 2, "holm_family_size": 1,
    "counts": {"replicated": 1, "not replicated": 0, "inconclusive": 0, "baseline failed": 0, "not run": 1},
    "replication_counts": {"not replicated": 1},
    "claims": [
        {"id": "V6-1", "statement": "acc | up", "seed_value": {"text": "69.23 -> 72.01%"}, "verdict": "replicated",
         "scale": "reduced scale, CPU", "replication_verdict": "not replicated",
         "questions": {"replication": _q("not replicated", -0.03, provenance={"flags": ["runs from 2 different commits"]}),
                       "attribution": _q("replicated", 0.05, p_holm=0.01),
                       "lr_control": _q("replicated", 0.04)}},
        {"id": "V6-3", "statement": "c100", "seed_value": {"text": "x"}, "verdict": "not run", "why": "needs CIFAR-100",
         "scale": None},
    ],
}


def _files(tmp_path: Path) -> tuple[Path, Path]:
    cj = tmp_path / "claims.json"
    cj.write_text(json.dumps(CLAIMS))
    rd = tmp_path / "README.md"
    rd.write_text("# optirep\n\n## Claims\n<!-- claims:start -->\nold\n<!-- claims:end -->\n\n## After\n")
    return cj, rd


def test_render_is_a_markdown_table_with_every_claim():
    md = readme.render(CLAIMS)
    rows = [line for line in md.splitlines() if line.startswith("| V6-")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
    assert cells[1] == r"acc \| up" and cells[-1] == "reduced scale, CPU"
    # (a) seed settings: effect in pp with its interval, the claim and SESOI, n / failures / test, provenance flag
    assert cells[3].startswith("-3 pp [-4, -2]; claimed +4 pp; SESOI 2 pp; n=3/3, failed 1/0, paired t, p=0.004")
    assert "⚑ runs from 2 different commits" in cells[3] and cells[4] == "not replicated"
    # (b) equal tuning with its Holm-adjusted p, the LR-matched control, and the headline verdict
    assert "+5 pp [+4, +6]" in cells[5] and "(Holm 0.01)" in cells[5]
    assert cells[6] == "+4 pp [+3, +5]: replicated" and cells[7] == "replicated"
    assert "not run: needs CIFAR-100" in rows[1]
    assert "1 replicated, 1 not run" in md and "(a) direct replication (the seed's own settings): 1 not replicated" in md


def test_update_then_check_passes_and_stale_fails(tmp_path):
    cj, rd = _files(tmp_path)
    with pytest.raises(readme.StaleReadme, match="stale"):
        readme.update(rd, cj, check=True)
    assert readme.main(["--claims", str(cj), "--readme", str(rd), "--check"]) == 1
    assert "old" in rd.read_text()  # --check writes nothing
    assert readme.main(["--claims", str(cj), "--readme", str(rd)]) == 0
    text = rd.read_text()
    assert "old" not in text and "| V6-1 |" in text and text.endswith("## After\n")
    assert readme.main(["--claims", str(cj), "--readme", str(rd), "--check"]) == 0
    assert readme.update(rd, cj) is False  # idempotent
    CLAIMS2 = {**CLAIMS, "claims": [{**CLAIMS["claims"][0], "verdict": "inconclusive"}, CLAIMS["claims"][1]]}
    cj.write_text(json.dumps(CLAIMS2))
    assert readme.main(["--claims", str(cj), "--readme", str(rd), "--check"]) == 1


def test_missing_markers_are_named(tmp_path):
    cj, rd = _files(tmp_path)
    rd.write_text("# no markers\n")
    with pytest.raises(ValueError, match="claims:start"):
        readme.update(rd, cj)
    assert readme.main(["--claims", str(cj), "--readme", str(rd)]) == 2


def test_repository_readme_is_not_stale():
    """The committed README's claims section is generated from the README study's claims.json.

    The study with `readme: true` (experiments/workflow-cpu.yaml) owns the section. With its
    claims.json committed the section must match it exactly; without, it must say so.
    """
    import yaml

    repo = Path(__file__).resolve().parents[1]
    wf = yaml.safe_load((repo / "experiments" / "workflow-cpu.yaml").read_text())
    assert wf.get("readme") is True
    rd, cj = repo / "README.md", repo / "results" / wf["study"] / "claims.json"
    text = rd.read_text()
    assert readme.START in text and readme.END in text
    if cj.exists():
        assert readme.update(rd, cj, check=True) is False, f"README.md is stale: run `optirep readme --claims {cj}`"
    else:
        section = text.split(readme.START, 1)[1].split(readme.END, 1)[0]
        assert "no results committed yet" in section
