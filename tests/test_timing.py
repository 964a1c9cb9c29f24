"""The timing stage (`optirep timing`): interleaved step cost of a task's optimizers in one process.

    python -m pytest -q tests/test_timing.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from optirep import cli, config
from optirep.timing import median_interval

ROOT = Path(__file__).resolve().parents[1]


def test_median_interval_is_the_binomial_order_statistic_interval():
    r = median_interval([float(x) for x in range(20, 0, -1)])  # order must not matter
    # n = 20: [x_(6), x_(15)] covers the median with P = 0.9586 (the largest such k; k = 7 gives 0.8847)
    assert (r["median"], r["lo"], r["hi"], r["n"]) == (10.5, 6.0, 15.0, 20)
    assert r["covered"] == pytest.approx(0.958610, abs=1e-6)
    small = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])  # n = 5 reaches 0.9375 at most: the range
    assert (small["lo"], small["hi"]) == (1.0, 5.0) and small["covered"] == pytest.approx(0.9375)
    with pytest.raises(ValueError, match="no samples"):
        median_interval([])


def test_timing_command_writes_an_interleaved_record(tmp_path, capsys):
    out = tmp_path / "t" / "mnist1d_all.json"
    rc = cli.main(["timing", "--experiment", str(ROOT / "experiments" / "smoke.yaml"), "--task", "mnist1d_all",
                   "--optimizers", "adamw", "biostatis_v6", "sgd", "--repeats", "3", "--warmup", "1",
                   "--out", str(out), "--quiet"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["baseline"] == "adamw" and rec["labels"] == ["adamw", "biostatis_v6", "sgd"]
    assert rec["repeats"] == 3 and rec["warmup"] == 1 and rec["enough_for_claim"] is False
    assert rec["hardware"]["threads"] == 1 and rec["git_sha"] and rec["versions"]["torch"]
    per = rec["per_label"]
    # torch's default AdamW on CPU is its for-loop; V6 on a small model takes its foreach path
    assert per["adamw"]["code_path"] == "for-loop" and per["biostatis_v6"]["code_path"] == "foreach"
    for label, r in per.items():
        assert len(r["times_step_s"]) == len(r["times_opt_step_s"]) == 3 and len(r["warmup_step_s"]) == 1
        assert 0 < r["opt_step_s"]["median"] < r["step_s"]["median"], label
        assert r["step_s"]["lo"] <= r["step_s"]["median"] <= r["step_s"]["hi"]
    assert per["adamw"]["ratio_step"]["median"] == 1.0  # the baseline against itself, round by round
    ratios = [a / b for a, b in zip(per["sgd"]["times_step_s"], per["adamw"]["times_step_s"])]
    assert per["sgd"]["ratio_step"]["median"] == pytest.approx(sorted(ratios)[1])  # paired, not a ratio of medians
    assert "| biostatis_v6 | biostatis_v6 | foreach |" in capsys.readouterr().out


def test_timing_refuses_a_label_of_another_task_and_a_lone_baseline(tmp_path):
    smoke = str(ROOT / "experiments" / "smoke.yaml")
    out = tmp_path / "x.json"
    with pytest.raises(config.ConfigError, match=r"task 'mnist1d_all' has no optimizer 'adam_sum'"):
        cli.COMMANDS["timing"](["--experiment", smoke, "--task", "mnist1d_all", "--optimizers", "adamw", "adam_sum",
                                "--out", str(out)])
    with pytest.raises(config.ConfigError, match="needs at least two optimizer labels"):
        cli.COMMANDS["timing"](["--experiment", smoke, "--task", "mnist1d_all", "--optimizers", "adamw",
                                "--out", str(out)])
    assert not out.exists()


def test_workflow_timing_blocks_name_tasks_and_labels_of_their_study():
    from optirep.config import load_experiment

    for wf in ("workflow.yaml", "workflow-cpu.yaml", "workflow-smoke.yaml"):
        cfg = yaml.safe_load((ROOT / "experiments" / wf).read_text())
        exps = {load_experiment(ROOT / f)["name"]: load_experiment(ROOT / f) for f in cfg["experiments"]}
        assert cfg.get("timing"), wf
        for exp, tasks in cfg["timing"].items():
            for task, spec in tasks.items():
                assert set(spec["optimizers"]) <= set(exps[exp]["tasks"][task]["optimizers"]), (wf, exp, task)
