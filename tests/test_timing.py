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
    from optirep.timing import check_entries

    for wf in ("workflow.yaml", "workflow-cpu.yaml", "workflow-smoke.yaml"):
        cfg = yaml.safe_load((ROOT / "experiments" / wf).read_text())
        exps = {load_experiment(ROOT / f)["name"]: load_experiment(ROOT / f) for f in cfg["experiments"]}
        assert cfg.get("timing"), wf
        for exp, tasks in cfg["timing"].items():
            for task, spec in tasks.items():
                arms = check_entries(exps[exp], task, spec["optimizers"], f"{wf}: {exp}/{task}")
                assert {lab for lab, _ in arms} <= set(exps[exp]["tasks"][task]["optimizers"]), (wf, exp, task)


def test_the_v6_timing_tasks_time_four_arms_on_the_seeds_and_the_fastest_code_paths():
    """V6-2/V6-6/V6-12 need AdamW at its default path and fused, V6 at its default path and its reference loop."""
    from optirep.config import parse_variant

    for wf, keys in (("workflow-cpu.yaml", [("cpu_vision_fmnist", "resnet18_fmnist32"), ("cpu_shakespeare", "gpt1")]),
                     ("workflow.yaml", [("full_cifar10", "v6_protocol"), ("full_shakespeare", "gpt1")])):
        cfg = yaml.safe_load((ROOT / "experiments" / wf).read_text())
        for exp, task in keys:
            spec = cfg["timing"][exp][task]
            arms = [parse_variant(e) for e in spec["optimizers"]]
            adamw, v6 = arms[0][0], arms[2][0]
            assert arms == [(adamw, {}), (adamw, {"fused": True}), (v6, {}), (v6, {"foreach": False})], (wf, exp)
            assert spec["repeats"] >= 30 and spec["warmup"] >= 5, (wf, exp)


# ----------------------------------------------------------------------------- label variants
@pytest.mark.parametrize("entry, want", [
    ("adamw", ("adamw", {})),
    ("adamw_published[fused=true]", ("adamw_published", {"fused": True})),
    ("biostatis_v6[foreach=false, compile=auto]", ("biostatis_v6", {"foreach": False, "compile": "auto"})),
    ("adamw[lr=1e-3,betas=[0.9, 0.99]]", ("adamw", {"lr": 1e-3, "betas": [0.9, 0.99]})),  # YAML 1.2 numbers, lists
    ("adamw[foreach=null]", ("adamw", {"foreach": None})),
])
def test_parse_variant_reads_a_label_and_yaml_overrides(entry, want):
    assert config.parse_variant(entry) == want


@pytest.mark.parametrize("entry, message", [
    ("Adamw[fused=true]", "is not an optimizer label entry"),
    ("adamw[fused=true", "is not an optimizer label entry"),
    ("adamw[]", r"empty \[\]"),
    ("adamw[fused]", r"'fused' is not key=value"),
    ("adamw[=true]", r"'=true' is not key=value"),
    ("adamw[fused=true,fused=false]", "hyperparameter 'fused' given twice"),
    ("adamw[fused=]", "hyperparameter 'fused' has no value"),
    ("adamw[betas=[0.9]", r"the value of 'betas' is not valid YAML \(expected ',' or '\]'"),
    (3, "is not an optimizer label entry"),
])
def test_parse_variant_names_what_is_malformed(entry, message):
    with pytest.raises(config.ConfigError, match=rf"--optimizers: .*{message}"):
        config.parse_variant(entry, "--optimizers")


@pytest.mark.parametrize("entries, message", [
    (["adamw", "adamw[fusd=true]"], r"'adamw\[fusd=true\]': unknown hyperparameter 'fusd' for adamw \(adamw\) "
                                     r"\(allowed: amsgrad, betas, .*fused"),
    (["adamw", "biostatis_v6[fused=true]"], r"unknown hyperparameter 'fused' for biostatis_v6 .*\(allowed: .*foreach"),
    (["adamw", "adamw[fused=maybe]"], r"optimizer.hp.fused: 'maybe' is not allowed \(allowed values: true, false, null\)"),
    (["adamw", "adamw[lr=-1]"], r"optimizer.hp.lr: -1 is not allowed"),
    (["adamw", "adam_sum[fused=true]"], r"task 'mnist1d_all' has no optimizer 'adam_sum' \(in 'adam_sum\[fused=true\]'\)"),
    (["adamw[fused=true]", "adamw[ fused = true ]"], "are the same arm"),
    (["adamw", "adamw"], "are the same arm"),
])
def test_timing_entries_are_checked_like_any_hp_before_any_data_is_loaded(tmp_path, entries, message):
    out = tmp_path / "x.json"
    with pytest.raises(config.ConfigError, match=message):
        cli.COMMANDS["timing"](["--experiment", str(ROOT / "experiments" / "smoke.yaml"), "--task", "mnist1d_all",
                                "--optimizers", *entries, "--out", str(out)])
    assert not out.exists()


def test_a_variant_the_optimizer_itself_refuses_is_named(tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(config.ConfigError, match=r"'adamw\[fused=true, foreach=true\]': the optimizer adamw refuses "
                                                 r"these hyperparameters \(.*fused.*foreach"):
        cli.COMMANDS["timing"](["--experiment", str(ROOT / "experiments" / "smoke.yaml"), "--task", "mnist1d_all",
                                "--optimizers", "adamw", "adamw[fused=true, foreach=true]", "--out", str(out)])
    assert not out.exists()


def test_timing_record_of_variants_names_the_overrides_and_the_code_path(tmp_path):
    out = tmp_path / "v.json"
    entries = ["adamw", "adamw[fused=true]", "biostatis_v6", "biostatis_v6[foreach=false]"]
    assert cli.main(["timing", "--experiment", str(ROOT / "experiments" / "smoke.yaml"), "--task", "mnist1d_all",
                     "--optimizers", *entries, "--repeats", "2", "--warmup", "1", "--out", str(out), "--quiet"]) == 0
    rec = json.loads(out.read_text())
    per = rec["per_label"]
    assert rec["labels"] == list(per) == entries and rec["baseline"] == "adamw"
    got = {e: (r["label"], r["optimizer"], r["overrides"], r["code_path"]) for e, r in per.items()}
    assert got == {"adamw": ("adamw", "adamw", {}, "for-loop"),
                   "adamw[fused=true]": ("adamw", "adamw", {"fused": True}, "fused"),
                   "biostatis_v6": ("biostatis_v6", "biostatis_v6", {}, "foreach"),
                   "biostatis_v6[foreach=false]": ("biostatis_v6", "biostatis_v6", {"foreach": False}, "reference")}
    # the override reaches the optimizer's resolved hyperparameters; the rest is the label's own
    assert per["adamw[fused=true]"]["hp"] == {**per["adamw"]["hp"], "fused": True}
    assert per["biostatis_v6[foreach=false]"]["hp"] == {**per["biostatis_v6"]["hp"], "foreach": False}
    for r in per.values():
        assert len(r["times_step_s"]) == 2 and len(r["warmup_step_s"]) == 1


def _snakemake_dry(tmp_path, optimizers):
    import os
    import subprocess
    import sys

    extra = tmp_path / "timing.yaml"
    extra.write_text(yaml.safe_dump({"timing": {"smoke": {"mnist1d_all": {"optimizers": optimizers}}}}))
    bin_ = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["snakemake", "-n", "-p", "--forceall", "--configfile", "experiments/workflow-smoke.yaml",
                           str(extra), "--", "results/smoke/timing/mnist1d_all.json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_workflow_accepts_variants_quoted_and_rejects_a_variant_of_another_tasks_label(tmp_path):
    """rules/common.smk checks each entry with timing.check_entries (a malformed entry: the parse_variant tests)."""
    ok = _snakemake_dry(tmp_path, ["adamw", "adamw[fused=true]", "biostatis_v6[foreach=false]"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "--optimizers adamw 'adamw[fused=true]' 'biostatis_v6[foreach=false]' --repeats" in ok.stdout
    bad = _snakemake_dry(tmp_path, ["adamw", "adam_sum[fused=true]"])
    assert bad.returncode != 0
    assert ("workflow config timing.smoke.mnist1d_all.optimizers: task 'mnist1d_all' has no optimizer 'adam_sum' "
            "(in 'adam_sum[fused=true]')") in bad.stdout + bad.stderr
