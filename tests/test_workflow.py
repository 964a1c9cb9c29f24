"""The workflow: dry runs of every study list the whole grid, lint, the smoke DAG to a PDF, dvc repro.

The smoke DAG runs in a copy of the checkout (tmp), so the test always exercises it from scratch
and never touches the working tree's results/.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optirep import config, tuning

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
       "DVC_NO_ANALYTICS": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def job_counts(stdout: str) -> dict[str, int]:
    block = stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def expected(workflow: str) -> dict[str, int]:
    """Jobs the study's experiment files define before any extension of an LR sweep: final runs, the initial
    sweep points, one bracketing round, one sweep record, the random trials and one selection per tuned label.
    An experiment listed in the workflow's `batch_runs` trains and analyses all seeds of a task x label in one
    job each (train_seeds_<exp>, analyze_seeds_<exp>) instead of one train job per run."""
    wf = config.yaml.safe_load((ROOT / workflow).read_text())
    n = {"train": 0, "tune_lr": 0, "bracket": 0, "sweep": 0, "tune_random": 0, "select": 0}
    for f in wf["experiments"]:
        cfg = config.load_experiment(ROOT / f)
        batched = cfg["name"] in wf.get("batch_runs", [])
        if batched:
            labels = sum(len(t["optimizers"]) for t in cfg["tasks"].values())
            n[f"train_seeds_{cfg['name']}"] = n[f"analyze_seeds_{cfg['name']}"] = labels
        else:
            n["train"] += len(config.grid(cfg))
        for task in cfg["tasks"].values():
            for lb in task["optimizers"]:
                o = cfg["optimizers"][lb]
                if o.get("tune"):
                    n["tune_lr"] += len(tuning.lr_grid(o, cfg["tuning"]["lr_sweep"]["per_decade"]))
                    n["tune_random"] += cfg["tuning"]["random_trials"]
                    n["bracket"] += 1
                    n["sweep"] += 1
                    n["select"] += 1
    return n


@functools.cache
def dry_run(workflow: str) -> str:
    # --forceall: the whole DAG, whatever results already exist
    res = run(["snakemake", "-n", "--forceall", "--configfile", workflow], ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.mark.parametrize("workflow", ["experiments/workflow.yaml", "experiments/workflow-cpu.yaml"])
def test_dry_run_lists_the_whole_grid(workflow):
    counts = job_counts(dry_run(workflow))
    for rule, n in expected(workflow).items():
        assert counts.get(rule, 0) == n, (rule, counts)
    assert counts["tune_lr"] >= 7 * counts["bracket"] > 0, "at least a 7-point sweep per tuned label"
    assert counts["claims"] == 1 and counts["paper"] == 1


def test_each_training_job_of_the_full_study_waits_only_for_its_own_datasets():
    # One dataset that cannot be fetched (VOC not staged) must block only the tasks that read it.
    wf = config.yaml.safe_load((ROOT / "experiments/workflow.yaml").read_text())
    tasks = {}
    for f in wf["experiments"]:
        cfg = config.load_experiment(ROOT / f)
        tasks.update({(cfg["name"], name): t for name, t in cfg["tasks"].items()})
    jobs = re.findall(r"^rule (train|tune_lr|tune_random):\n    input: (.*)\n(?:    .*\n)*?    wildcards: exp=(\w+), "
                      r"task=(\w+)", dry_run("experiments/workflow.yaml"), re.M)
    n = expected("experiments/workflow.yaml")
    assert len(jobs) == n["train"] + n["tune_lr"] + n["tune_random"]
    for rule, inputs, exp, task in jobs:
        t = tasks[(exp, task)]
        # the LM tasks read GPT-2 BPE tokens: the tokenizer files are their second dataset
        want = {t["dataset"]} | ({"gpt2"} if t["objective"] == "lm" else set())
        assert set(re.findall(r"results/data/(\w+)\.fetched", inputs)) == want, (rule, exp, task)


def test_snakemake_lint_is_clean():
    res = run(["snakemake", "--lint"], ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


@pytest.mark.slow
def test_smoke_dag_to_pdf_and_dvc_repro_of_one_table(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_checkout(repo)
    latex = shutil.which("latexmk") is not None  # `make test` installs it when apt works
    res = run(["snakemake", "--cores", "2", "--configfile", "experiments/workflow-smoke.yaml",
               "--config", f"latex={latex}"], repo)
    assert res.returncode == 0, res.stderr[-6000:]

    smoke = repo / "results" / "smoke"
    cfg = config.load_experiment(repo / "experiments" / "smoke.yaml")
    for task, label, seed in config.grid(cfg):
        run_dir = smoke / "runs" / task / label / config.spec_hash(cfg, task, label) / f"seed{seed}"
        m = json.loads((run_dir / "metrics.json").read_text())
        assert m["steps"] == cfg["tasks"][task]["steps"] or m["diverged"], (task, label, seed)
    for task in cfg["tasks"]:
        agg = json.loads((smoke / "aggregate" / f"{task}.json").read_text())
        assert agg["task"] == task
    # the tuning protocol ran: a bracketing record and a selection with its effective lr, and the figure
    agg = json.loads((smoke / "aggregate" / "mnist1d_all.json").read_text())
    sel = agg["per_label"]["biostatis_v6_tuned"]["tuning"]["selected"]
    assert sel["seeds"] == cfg["tuning"]["seeds"] and sel["effective_lr"] > 0 and sel["n_sweep_points"] >= 7
    assert agg["per_label"]["biostatis_v6_tuned"]["tuning"]["sweep"]["covered"] is not None
    fig = smoke / "paper" / "generated" / "smoke" / "fig_lr_sensitivity" / "fig_lr_sensitivity_mnist1d_all.png"
    assert fig.stat().st_size > 20_000
    claims = json.loads((smoke / "claims.json").read_text())
    assert len(claims["claims"]) == sum(claims["counts"].values()) > 0
    timing = json.loads((smoke / "timing" / "mnist1d_all.json").read_text())  # the timing stage, in miniature
    assert timing["labels"] == ["adamw", "adamw[fused=true]", "biostatis_v6", "biostatis_v6[foreach=false]"]
    assert [r["code_path"] for r in timing["per_label"].values()] == ["for-loop", "fused", "foreach", "reference"]
    assert timing["repeats"] == 5
    numbers = (smoke / "paper" / "generated" / "numbers.tex").read_text()
    assert "\\newcommand" in numbers
    if latex:
        assert (smoke / "paper" / "ms.pdf").stat().st_size > 10_000

    # dvc repro of one table stage rebuilds only that table from the existing results tree
    assert run(["git", "init", "-q"], repo).returncode == 0
    table = smoke / "paper" / "generated" / "smoke" / "table_main.tex"
    table.unlink()
    other = smoke / "paper" / "generated" / "claims_table.tex"
    stamp = other.stat().st_mtime_ns
    res = run(["dvc", "repro", "--single-item", "table_main@smoke"], repo, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert table.exists() and "\\begin{table}" in table.read_text()
    assert other.stat().st_mtime_ns == stamp
    # the DVC timing stage passes the variant entries through the shell intact (quoted: `[` is a glob)
    (repo / "adamwf").touch()  # would match the glob adamw[fused=true] if it were unquoted
    (smoke / "timing" / "mnist1d_all.json").unlink()
    res = run(["dvc", "repro", "--single-item", "timing@smoke-mnist1d_all"], repo, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert json.loads((smoke / "timing" / "mnist1d_all.json").read_text())["labels"] == timing["labels"]


def test_dvc_yaml_is_generated_from_the_workflow_configs():
    res = run([sys.executable, "scripts/gen_dvc.py", "--check"], ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
