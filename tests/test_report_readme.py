"""README claims section: render, update, and --check catching a stale README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optirep.report import readme

CLAIMS = {
    "alpha": 0.05, "n_claims": 2, "counts": {"replicated": 1, "not replicated": 0, "inconclusive": 0,
                                             "baseline failed": 0, "not run": 1},
    "claims": [
        {"id": "V6-1", "statement": "acc | up", "seed_value": {"text": "69.23 -> 72.01%"}, "verdict": "replicated",
         "scale": "reduced scale, CPU", "mean_method": 0.9, "mean_baseline": 0.8, "n_method": 3, "n_baseline": 3,
         "p_holm": 0.01},
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
    assert r"acc \| up" in rows[0] and "0.9 vs 0.8 (n=3/3, Holm p=0.01)" in rows[0] and "reduced scale, CPU" in rows[0]
    assert "not run: needs CIFAR-100" in rows[1]
    assert "1 replicated, 1 not run" in md


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
