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
from optirep.train import train

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
                "tune": True, "search_space": {"lr": {"min": 1.0e-3, "max": 1.0e-1}}},
        "sgd_huge": {"name": "sgd", "hp": {"lr": 1.0e6, "momentum": 0.9}},
    },
    "tuning": {"trials": 2, "seed": 0},
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
                "optimizer_state_bytes", "versions", "git_sha", "device", "scale"):
        assert key in rec, key
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


def test_trial_and_selection_through_the_cli(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    dirs = []
    for k in range(2):
        d = tmp_path / f"trial{k}"
        assert cli.main(["train", "--experiment", str(exp), "--task", "mnist1d_mlp", "--optimizer", "sgd",
                         "--seed", "0", "--trial", str(k), "--out", str(d), "--quiet",
                         "--set", "task.steps=8"]) == 0
        dirs.append(d)
    hps = [json.loads((d / "metrics.json").read_text())["hp"]["lr"] for d in dirs]
    assert len(set(hps)) == 2 and all(1e-3 <= v <= 1e-1 for v in hps)
    out = tmp_path / "selected.json"
    assert cli.main(["select", "--experiment", str(exp), "--task", "mnist1d_mlp", "--optimizer", "sgd",
                     "--trials", *map(str, dirs), "--out", str(out)]) == 0
    chosen = json.loads(out.read_text())
    assert chosen["hp"]["lr"] in hps and chosen["budget"] == 2


def test_optimizer_that_raises_on_nan_gradients_records_a_divergence(tmp_path):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["esgd_huge"] = {"name": "enhanced_sgd", "hp": {"lr": 1.0e30}}
    cfg["tasks"]["mnist1d_mlp"]["optimizers"].append("esgd_huge")
    rec = train(run_cfg(tmp_path, label="esgd_huge", cfg=cfg), tmp_path / "e", quiet=True)
    assert rec["diverged"] is True and rec["diverged_step"] >= 1 and math.isnan(rec["final_test"])
