"""The training entrypoint: config errors, outputs, determinism, resume, divergence."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from optirep import cli, config
from optirep.train import TIMING_WARMUP_STEPS, train

EXPERIMENT = {
    "name": "unit",
    "scale": "unit test, CPU",
    "seeds": [0],
    "device": "cpu",
    "threads": 1,
    "tasks": {
        "mnist1d_mlp": {
            "dataset": "mnist1d", "model": "mnist1d_mlp", "model_args": {"num_classes": 10},
            "objective": "classification", "batch_size": 32, "steps": 24, "eval_every": 8,
            "metric": "accuracy", "features": 64, "optimizers": ["adamw", "sgd", "sgd_huge"],
            "gate": {"optimizer": "adamw", "min": 0.0},
        },
    },
    "optimizers": {
        "adamw": {"name": "adamw", "hp": {"lr": 3.0e-3}},
        "sgd": {"name": "sgd", "hp": {"lr": 0.05, "momentum": 0.9},
                "tune": True, "search_space": {"lr": {"min": 1.0e-3, "max": 1.0}}},
        "sgd_huge": {"name": "sgd", "hp": {"lr": 1.0e6, "momentum": 0.9}},
    },
    "tuning": {"seeds": [100, 101], "budget": 20, "random_trials": 1,
               "lr_sweep": {"per_decade": 2, "hard_min": 1.0e-4, "hard_max": 3.0}},
}


def write_experiment(tmp_path: Path, cfg: dict = EXPERIMENT) -> Path:
    path = tmp_path / "experiments" / "unit.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cfg(tmp_path, label="adamw", seed=0, overrides=(), cfg=EXPERIMENT):
    exp = config.load_experiment(write_experiment(tmp_path, cfg))
    return config.resolve_run(exp, "mnist1d_mlp", label, seed, list(overrides))


def test_config_rejects_unknown_key_with_allowed_keys(tmp_path):
    bad = json.loads(json.dumps(EXPERIMENT))
    bad["tasks"]["mnist1d_mlp"]["stepz"] = 3
    with pytest.raises(config.ConfigError, match=r"tasks\.mnist1d_mlp: Additional properties are not allowed \('stepz'.*allowed keys: .*steps"):
        config.load_experiment(write_experiment(tmp_path, bad))


def test_config_rejects_unknown_optimizer_and_hp(tmp_path):
    bad = json.loads(json.dumps(EXPERIMENT))
    bad["optimizers"]["adamw"]["name"] = "adamx"
    bad["optimizers"]["sgd"]["hp"]["lrr"] = 1
    with pytest.raises(config.ConfigError) as info:
        config.load_experiment(write_experiment(tmp_path, bad))
    msg = str(info.value)
    assert "optimizers.adamw.name: unknown optimizer 'adamx' (allowed values: " in msg and "adamw" in msg
    assert "optimizers.sgd: unknown hyperparameter 'lrr' for sgd (allowed: " in msg


def test_config_rejects_wrong_type_and_bad_override(tmp_path):
    bad = json.loads(json.dumps(EXPERIMENT))
    bad["tasks"]["mnist1d_mlp"]["batch_size"] = "big"
    with pytest.raises(config.ConfigError, match=r"tasks\.mnist1d_mlp\.batch_size: 'big' is not of type 'integer'"):
        config.load_experiment(write_experiment(tmp_path, bad))
    with pytest.raises(config.ConfigError, match="expected key=value"):
        run_cfg(tmp_path, overrides=["task.steps"])
    with pytest.raises(config.ConfigError, match="unknown hyperparameter"):
        run_cfg(tmp_path, overrides=["optimizer.hp.nope=1"])


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    code = cli.main(["train", "--experiment", str(tmp_path / "missing.yaml"), "--task", "t", "--optimizer", "o",
                     "--seed", "0", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "experiment file not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_writes_all_outputs_and_is_deterministic(tmp_path):
    run = run_cfg(tmp_path)
    rec = train(run, tmp_path / "a", quiet=True)
    assert not (tmp_path / "a" / "ckpt.pt").exists(), "a finished run drops its checkpoint"
    for f in ("config.json", "metrics.jsonl", "metrics.json", "features.npz", "model.pt"):
        assert (tmp_path / "a" / f).exists(), f
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert set(rows[0]) >= {"step", "train_loss", "val_metric", "lr", "wall_time_s"}
    assert rec["steps"] == 24 and not rec["diverged"] and 0.0 <= rec["final_test"] <= 1.0
    for key in ("best_val", "best_val_step", "time_per_step_s", "time_per_opt_step_s", "peak_memory_bytes",
                "optimizer_state_bytes", "versions", "git_sha", "code_path", "device", "scale"):
        assert key in rec, key
    # per-step times leave out the warm-up steps, reported beside them
    assert rec["warmup_steps"] == TIMING_WARMUP_STEPS and rec["timed_steps"] == 24 - TIMING_WARMUP_STEPS
    assert math.isclose(rec["wall_time_s"], rec["warmup_time_s"] + rec["time_per_step_s"] * rec["timed_steps"],
                        rel_tol=1e-9)
    assert 0 < rec["warmup_opt_time_s"] <= rec["warmup_time_s"] and 0 < rec["time_per_opt_step_s"] < rec["time_per_step_s"]
    assert rec["code_path"] == "torch"  # torch's AdamW with its default foreach setting
    # AdamW: exp_avg + exp_avg_sq (2P) plus one 4-byte step counter per parameter tensor
    assert 0 <= rec["optimizer_state_bytes"] - 2 * rec["param_bytes"] <= 4 * 16
    rec2 = train(run, tmp_path / "b", quiet=True)
    assert rec2["final_test"] == rec["final_test"] and rec2["final_train_loss"] == rec["final_train_loss"]


def test_resume_is_bit_identical(tmp_path):
    run = run_cfg(tmp_path, overrides=["task.checkpoint_every=4"])
    full = train(run, tmp_path / "full", quiet=True)
    assert train(run, tmp_path / "part", quiet=True, stop_after=13) is None  # stops between evals
    assert not (tmp_path / "part" / "metrics.json").exists()
    resumed = train(run, tmp_path / "part", quiet=True)
    for key in ("final_test", "final_val", "best_val", "best_val_step", "final_train_loss"):
        assert resumed[key] == full[key], key
    # each process warms up (compile, allocation): both warm-ups are left out of the per-step times
    assert full["warmup_steps"] == TIMING_WARMUP_STEPS and resumed["warmup_steps"] == 2 * TIMING_WARMUP_STEPS
    assert resumed["timed_steps"] == 24 - 2 * TIMING_WARMUP_STEPS
    a = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "wall_time_s"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_sigterm_checkpoints_and_the_rerun_resumes_bit_identically(tmp_path):
    # A real `optirep train` process gets SIGTERM mid-run, as Slurm sends before a time-limit or
    # preemption kill: it checkpoints, exits 143 without metrics.json, and the rerun matches an
    # uninterrupted run exactly.
    sets = ["task.steps=300", "task.eval_every=20"]
    run = run_cfg(tmp_path, overrides=sets)
    part = tmp_path / "part"
    cmd = [sys.executable, "-m", "optirep", "train", "--experiment", str(write_experiment(tmp_path)),
           "--task", "mnist1d_mlp", "--optimizer", "adamw", "--seed", "0", "--out", str(part), "--quiet"]
    proc = subprocess.Popen(cmd + [a for s in sets for a in ("--set", s)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (part / "ckpt.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM at step" in err and not (part / "metrics.json").exists()
    stopped = torch.load(part / "ckpt.pt", weights_only=False)["state"]["step"]
    assert 20 <= stopped < 300

    full = train(run, tmp_path / "full", quiet=True)
    resumed = train(run, part, quiet=True)
    for key in ("final_test", "final_val", "best_val", "best_val_step", "final_train_loss", "steps"):
        assert resumed[key] == full[key], key
    rows = lambda d: [{k: v for k, v in json.loads(r).items() if k != "wall_time_s"}  # noqa: E731
                      for r in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(part) == rows(tmp_path / "full")


def test_finished_run_is_not_retrained_and_foreign_config_is_refused(tmp_path):
    run = run_cfg(tmp_path)
    train(run, tmp_path / "a", quiet=True)
    stamp = (tmp_path / "a" / "metrics.json").stat().st_mtime_ns
    train(run, tmp_path / "a", quiet=True)
    assert (tmp_path / "a" / "metrics.json").stat().st_mtime_ns == stamp
    other = run_cfg(tmp_path, overrides=["optimizer.hp.lr=0.5"])
    with pytest.raises(config.ConfigError, match="holds a run with a different config"):
        train(other, tmp_path / "a", quiet=True)


def test_divergence_is_a_result_not_a_crash(tmp_path):
    rec = train(run_cfg(tmp_path, label="sgd_huge"), tmp_path / "d", quiet=True)
    assert rec["diverged"] is True and 1 <= rec["diverged_step"] <= 8
    assert math.isnan(rec["final_test"])
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["diverged"] is True


def test_tuning_protocol_through_the_cli(tmp_path, capsys):
    """LR sweep -> bracket rounds (extending while the best point is at an edge) -> random trial -> selection,
    the way rules/tune.smk chains them; then the aggregate's tuning record and the sensitivity figure."""
    from optirep.report.aggregate import collect_tuning, tuning_view
    from optirep.report.figures import fig_lr_sensitivity, lr_frame

    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["tasks"]["mnist1d_mlp"].update(steps=8, eval_every=4, features=0)  # 2 seeds x 8+ configurations: keep it short
    exp = write_experiment(tmp_path, cfg)
    loaded = config.load_experiment(exp)
    spec = config.spec_hash(loaded, "mnist1d_mlp", "sgd")  # the tuning tree's config level (rules/tune.smk)
    tdir = tmp_path / "results" / "unit" / "tune" / "mnist1d_mlp" / "sgd" / spec
    base = ["--experiment", str(exp), "--task", "mnist1d_mlp", "--optimizer", "sgd"]

    def point(k):
        assert cli.main(["tune-trial", *base, "--lr-point", str(k), "--out", str(tdir / "lr" / f"k{k}"), "--quiet"]) == 0
        return tdir / "lr" / f"k{k}"

    ks, r = list(range(7)), 0
    while True:
        dirs = [point(k) for k in ks]
        out = tdir / "bracket" / f"round{r}.json"
        assert cli.main(["bracket", *base, "--points", *map(str, dirs), "--out", str(out)]) == 0
        rec = json.loads(out.read_text())
        if rec["status"] == "done":
            break
        ks, r = sorted(ks + rec["next"]), r + 1
    assert rec["interior"] or rec["bound_hit"] in ("hard_min", "hard_max", "budget")
    (tdir / "sweep.json").write_text(out.read_text())
    trial = json.loads((tdir / "lr" / "k0" / "trial.json").read_text())
    assert trial["seeds"] == [100, 101] and trial["lr"] == pytest.approx(1e-3)
    for s in (100, 101):  # each tuning seed ran with its own seed, never a final seed
        assert json.loads((tdir / "lr" / "k0" / f"seed{s}" / "config.json").read_text())["seed"] == s
    rdir = tdir / "random" / "trial0"
    assert cli.main(["tune-trial", *base, "--random", "0", "--sweep", str(tdir / "sweep.json"), "--out", str(rdir),
                     "--quiet"]) == 0
    best = rec["best"]["lr"]
    assert best / 10 ** 0.5 <= json.loads((rdir / "trial.json").read_text())["lr"] <= best * 10 ** 0.5
    assert cli.main(["select", *base, "--sweep", str(tdir / "sweep.json"), "--trials", str(rdir),
                     "--out", str(tdir / "selected.json")]) == 0
    chosen = json.loads((tdir / "selected.json").read_text())
    pool = rec["points"] + [json.loads((rdir / "trial.json").read_text())]
    assert chosen["value"] == max(p["final_val"] for p in pool)  # accuracy: the best mean over tuning seeds
    assert chosen["runs"] == 2 * len(pool) <= chosen["budget"] and chosen["effective_lr"] == chosen["lr"]

    tuning = collect_tuning(tmp_path / "results" / "unit", "mnist1d_mlp", "sgd", loaded)
    assert tuning["selected"] == {k: v for k, v in chosen.items() if k != "trials"}
    # A tree of another config (another spec) is not read; one written before the spec level still is.
    tdir.rename(tdir.parent / "cfg-0000000000")
    assert collect_tuning(tmp_path / "results" / "unit", "mnist1d_mlp", "sgd", loaded) is None
    for entry in (tdir.parent / "cfg-0000000000").iterdir():
        entry.rename(tdir.parent / entry.name)
    assert collect_tuning(tmp_path / "results" / "unit", "mnist1d_mlp", "sgd", loaded) == tuning
    view = tuning_view(tuning)
    assert view["selected_trial"] == chosen["trial"] and len(view["trials"]) == len(pool)
    agg = {"experiment": "unit", "task": "mnist1d_mlp", "scale": "unit", "metric": "accuracy", "labels": ["sgd"],
           "per_label": {"sgd": {"tuning": tuning}}}
    frame = lr_frame(agg)
    assert frame[frame["selected"]]["trial"].nunique() == 1 and len(frame) == 2 * len(pool)
    paths = fig_lr_sensitivity(agg, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".pdf", ".png"] and all(p.stat().st_size > 5000 for p in paths)


def test_tune_trial_refuses_an_untuned_label_and_a_random_trial_without_sweep(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    base = ["--experiment", str(exp), "--task", "mnist1d_mlp"]
    assert cli.main(["tune-trial", *base, "--optimizer", "adamw", "--lr-point", "0", "--out", str(tmp_path / "x")]) == 2
    assert "label 'adamw' has no tune: true (tuned labels: sgd)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["tune-trial", *base, "--optimizer", "sgd", "--random", "0", "--out", str(tmp_path / "y")])
    assert "--random needs --sweep" in capsys.readouterr().err


def test_optimizer_that_raises_on_nan_gradients_records_a_divergence(tmp_path):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["esgd_huge"] = {"name": "enhanced_sgd", "hp": {"lr": 1.0e30}}
    cfg["tasks"]["mnist1d_mlp"]["optimizers"].append("esgd_huge")
    rec = train(run_cfg(tmp_path, label="esgd_huge", cfg=cfg), tmp_path / "e", quiet=True)
    assert rec["diverged"] is True and rec["diverged_step"] >= 1 and math.isnan(rec["final_test"])
