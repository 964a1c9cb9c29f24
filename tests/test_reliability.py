"""Issue #15 sections 2-5: files read back are verified, bad input is refused before anything is
written, nothing finished is lost, and the run directory has one writer.

Every case here failed before the fix (see the issue note for the before/after counts).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import EXPERIMENT, run_cfg, write_experiment

from optirep import cli, config
from optirep.train import train

TASK = "mnist1d_mlp"


def cli_train(tmp_path, *extra, label="adamw", seed="0", out=None, exp=None):
    exp = exp or write_experiment(tmp_path)
    out = out or tmp_path / "run"
    return cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", label, "--seed", seed,
                     "--out", str(out), "--quiet", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- 3. bad input, nothing written
BAD_INPUT = [
    # (--set / args, words the one-line message must contain)
    (["--set", "optimizer.hp.lr=-0.001"], ["optimizer.hp.lr", "> 0"]),
    (["--set", "optimizer.hp.lr=.nan"], ["optimizer.hp.lr", "finite"]),
    (["--set", "optimizer.hp.lr=.inf"], ["optimizer.hp.lr", "finite"]),
    (["--set", "optimizer.hp.lr=0"], ["optimizer.hp.lr", "> 0"]),
    (["--set", "optimizer.hp.lr=abc"], ["optimizer.hp.lr", "'abc'", "number"]),
    (["--set", "optimizer.hp.betas=[1.5, 0.9]"], ["optimizer.hp.betas", "[0, 1)"]),
    (["--set", "optimizer.hp.betas=[0.9]"], ["optimizer.hp.betas", "2 finite numbers"]),
    (["--set", "optimizer.hp.weight_decay=-1"], ["optimizer.hp.weight_decay", ">= 0"]),
    (["--set", "optimizer.hp.amsgrad=maybe"], ["optimizer.hp.amsgrad", "true, false"]),
    (["--set", "run.threads=-1"], ["run.threads", ">= 1"]),
    (["--set", "run.threads=two"], ["run.threads", ">= 1"]),
    (["--set", "run.device=tpu"], ["run.device", "auto, cpu, cuda"]),
    (["--set", "run.bogus=1"], ["run.bogus", "run.device, run.threads"]),
    (["--set", "optimizer.lrr=1"], ["optimizer.lrr", "optimizer.hp.<name>"]),
    (["--set", "optimizer.name=sgd"], ["optimizer.name", "optimizer.hp.<name>"]),
    (["--set", "task.data_args.bogus=1"], ["task.data_args", "bogus", "allowed"]),
    (["--set", "task.model_args.bogus=1"], ["task.model_args", "bogus"]),
    (["--set", "task.steps=abc"], ["task.steps", "'abc'", "integer"]),
    (["--set", "task.data_args.train_fraction=abc"], ["task.data_args.train_fraction", "'abc'", "number"]),
    (["--set", "task.data_args.train_fraction=2"], ["task.data_args", "train_fraction", "(0, 1]"]),
    (["--set", "task.data_args.per_class=2.5"], ["task.data_args.per_class", "whole number"]),
    (["--set", "task.model_args.num_classes=abc"], ["task.model_args.num_classes", "'abc'", "number"]),
    (["--set", "optimizer.closure=maybe"], ["optimizer.closure", "true, false"]),
    (["--stop-after", "0"], ["--stop-after", ">= 1"]),
    (["--stop-after", "-3"], ["--stop-after", ">= 1"]),
]


@pytest.mark.parametrize("args,words", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, words):
    assert cli_train(tmp_path, *args) == 2
    line = one_error_line(capsys)
    for w in words:
        assert w in line, (w, line)
    assert not (tmp_path / "run").exists(), "bad input must not leave a run directory"


def test_negative_seed_is_refused_before_writing(tmp_path, capsys):
    assert cli_train(tmp_path, seed="-1") == 2
    assert "seed: -1 is not allowed (allowed: an integer 0..4294967295)" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_bad_input_does_not_block_the_corrected_rerun(tmp_path, capsys):
    assert cli_train(tmp_path, "--set", "optimizer.hp.lr=-1") == 2
    assert cli_train(tmp_path, "--set", "task.steps=8") == 0
    assert (tmp_path / "run" / "metrics.json").exists()


def test_an_optimizers_own_checks_run_before_writing(tmp_path, capsys):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["v6"] = {"name": "biostatis_v6", "hp": {"lr": 1e-3, "homeo_rate": -1.0}}
    cfg["tasks"][TASK]["optimizers"].append("v6")
    assert cli_train(tmp_path, label="v6", exp=write_experiment(tmp_path, cfg)) == 2
    line = one_error_line(capsys)
    assert "homeo_rate" in line and ">= 0" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,value", [("1e-3", 1e-3), ("1.0e8", 1.0e8), ("+2E+2", 200.0), (".5e1", 5.0)])
def test_exponent_numbers_are_numbers_in_yaml_and_set(tmp_path, text, value):
    cfg = (write_experiment(tmp_path).read_text()
           .replace("lr: 0.003", f"lr: {text}"))
    exp = tmp_path / "experiments" / "exp.yaml"
    exp.write_text(cfg)
    loaded = config.load_experiment(exp)
    assert loaded["optimizers"]["adamw"]["hp"]["lr"] == value and isinstance(value, float)
    parts, v = config.parse_override(f"optimizer.hp.lr={text}")
    assert v == value and isinstance(v, float)


def test_exponent_lr_trains(tmp_path):
    assert cli_train(tmp_path, "--set", "optimizer.hp.lr=3e-3", "--set", "task.steps=8") == 0


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str):
    mnt = tmp_path / "small disk"
    if not _tmpfs(mnt, size):
        pytest.skip("cannot mount a tmpfs here (needs root); test_disk_full_by_injection covers the logic")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_disk_full_names_the_directory_and_leaves_no_temp_file(tmp_path, capsys):
    # 48 KiB: config.json and the log fit, a checkpoint (~90 KB with AdamW state) does not
    with small_disk(tmp_path, "48k") as mnt:
        out = mnt / "run"
        assert cli_train(tmp_path, "--set", "task.checkpoint_every=4", out=out) == 2
        line = one_error_line(capsys)
        assert f"no space left on {out}" in line and "ckpt.pt" in line
        assert not list(out.glob("*.tmp")), sorted(p.name for p in out.iterdir())


def test_disk_full_by_injection(tmp_path, monkeypatch):
    """The same path without a tmpfs: the write of the checkpoint bytes hits ENOSPC."""
    real_open = open

    def full_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        if str(file).endswith("ckpt.pt.tmp"):
            fh.close()

            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return False

                def write(self, data):
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Full()
        return fh

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(ValueError, match=r"no space left on .*run \(writing ckpt\.pt"):
        train(run_cfg(tmp_path, overrides=["task.checkpoint_every=4"]), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "ckpt.pt.tmp").exists()


# ----------------------------------------------------------------------------- 2. checkpoints are verified
def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero_bytes":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(os.urandom(len(data)))
    elif how == "one_flipped_bit":
        # a bit inside the tensor data (the middle of the zip's stored tensors): torch.load would read it fine
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
    else:
        raise ValueError(how)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    run = run_cfg(tmp, overrides=["task.checkpoint_every=4"])
    return run, train(run, tmp / "full", quiet=True)


KEYS = ("final_test", "final_val", "best_val", "best_val_step", "final_train_loss", "steps")


@pytest.mark.parametrize("how", ["truncated", "zero_bytes", "random", "one_flipped_bit"])
def test_a_bad_checkpoint_is_named_and_the_run_resumes_from_the_previous_good_one(tmp_path, reference, capsys, how):
    run, full = reference
    out = tmp_path / "part"
    assert train(run, out, quiet=True, stop_after=13) is None  # checkpoints at steps 4, 8, 12 (checkpoint_every) and 13 (the stop)
    _corrupt(out / "ckpt.pt", how)
    capsys.readouterr()
    resumed = train(run, out, quiet=True)
    err = capsys.readouterr().err
    assert f"{out / 'ckpt.pt'}" in err and "resuming" in err and "ckpt.prev.pt (step 12)" in err
    assert (out / "ckpt.pt.corrupt").exists()
    assert {k: resumed[k] for k in KEYS} == {k: full[k] for k in KEYS}


def test_both_checkpoints_bad_restarts_from_scratch_and_says_so(tmp_path, reference, capsys):
    run, full = reference
    out = tmp_path / "part"
    train(run, out, quiet=True, stop_after=13)
    _corrupt(out / "ckpt.pt", "one_flipped_bit")
    _corrupt(out / "ckpt.prev.pt", "truncated")
    capsys.readouterr()
    resumed = train(run, out, quiet=True)
    err = capsys.readouterr().err
    assert "ckpt.pt" in err and "ckpt.prev.pt" in err and "restarting the run from step 0" in err
    assert {k: resumed[k] for k in KEYS} == {k: full[k] for k in KEYS}


# ----------------------------------------------------------------------------- 2. truncated run files are named
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fin")
    exp = write_experiment(tmp)
    out = tmp / "runs" / TASK / "adamw" / "seed0"
    assert cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", "adamw", "--seed", "0",
                     "--out", str(out), "--quiet", "--set", "task.steps=8"]) == 0
    return exp, out


def _copy_run(finished, tmp_path) -> tuple[Path, Path]:
    import shutil

    exp, out = finished
    res = tmp_path / "results"
    dst = res / "runs" / TASK / "adamw" / "seed0"
    shutil.copytree(out, dst)
    return exp, dst


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_train_names_a_truncated_run_file(tmp_path, finished, capsys, name):
    exp, run = _copy_run(finished, tmp_path)
    _truncate(run / name)
    assert cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", "adamw", "--seed", "0",
                     "--out", str(run), "--quiet", "--set", "task.steps=8"]) == 2
    line = one_error_line(capsys)
    assert str(run / name) in line and "truncated" in line


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "model.pt", "features.npz"])
def test_analyze_names_a_truncated_run_file(tmp_path, finished, capsys, name):
    exp, run = _copy_run(finished, tmp_path)
    _truncate(run / name)
    assert cli.main(["analyze", str(run), "--out", str(tmp_path / "a.json")]) == 2
    line = one_error_line(capsys)
    assert str(run / name) in line and ("truncated" in line or "corrupt" in line)
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize("name", ["model.pt", "features.npz"])
def test_analyze_detects_a_flipped_bit_in_model_and_features(tmp_path, finished, capsys, name):
    exp, run = _copy_run(finished, tmp_path)
    _corrupt(run / name, "one_flipped_bit")
    assert cli.main(["analyze", str(run), "--out", str(tmp_path / "a.json")]) == 2
    line = one_error_line(capsys)
    assert str(run / name) in line and "corrupt" in line


def test_aggregate_and_select_name_a_truncated_metrics_json(tmp_path, finished, capsys):
    exp, run = _copy_run(finished, tmp_path)
    _truncate(run / "metrics.json")
    assert cli.main(["aggregate", "--experiment", str(exp), "--results", str(tmp_path / "results"),
                     "--task", TASK, "--out", str(tmp_path / "agg.json")]) == 2
    line = one_error_line(capsys)
    assert str(run / "metrics.json") in line and "truncated" in line
    sweep = tmp_path / "sweep.json"
    sweep.write_text('{"best": {"lr": 0.0')
    assert cli.main(["select", "--experiment", str(exp), "--task", TASK, "--optimizer", "sgd", "--sweep", str(sweep),
                     "--trials", str(run), "--out", str(tmp_path / "sel.json")]) == 2
    line = one_error_line(capsys)
    assert str(sweep) in line and "truncated" in line


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.update(final_test="abc"), ["final_test", "'abc'"]),
    (lambda m: m.clear(), ["required property"]),
    (lambda m: m.update(label="sgd"), ["label is 'sgd' but its path says 'adamw'"]),
    (lambda m: m.update(seed=3), ["seed is 3 but its path says 0"]),
    (lambda m: m.update(task="other"), ["task is 'other'"]),
], ids=["string_metric", "empty_record", "other_label", "other_seed", "other_task"])
def test_aggregate_validates_every_run_record(tmp_path, finished, capsys, edit, words):
    """Before: `final_test: "abc"` or `{}` counted as a diverged seed (a failed gate, a flipped verdict)."""
    exp, run = _copy_run(finished, tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    edit(m)
    (run / "metrics.json").write_text(json.dumps(m))
    assert cli.main(["aggregate", "--experiment", str(exp), "--results", str(tmp_path / "results"),
                     "--task", TASK, "--out", str(tmp_path / "agg.json")]) == 2
    line = one_error_line(capsys)
    assert str(run / "metrics.json") in line
    for w in words:
        assert w in line, (w, line)
    assert not (tmp_path / "agg.json").exists()


# ----------------------------------------------------------------------------- 4. nothing finished is lost
def test_finished_run_without_config_json_is_not_retrained_over(tmp_path, finished, capsys):
    exp, run = _copy_run(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    (run / "config.json").unlink()
    del before["config.json"]
    assert cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", "adamw", "--seed", "0",
                     "--out", str(run), "--quiet", "--set", "task.steps=8", "--set", "optimizer.hp.lr=0.01"]) == 2
    line = one_error_line(capsys)
    assert "holds a finished run of another config" in line and "not retrained over" in line
    assert {n: (run / n).read_bytes() for n in before} == before
    # the same config: the finished run is recognised (and its config.json restored), nothing retrained
    assert cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", "adamw", "--seed", "0",
                     "--out", str(run), "--quiet", "--set", "task.steps=8"]) == 0
    assert {n: (run / n).read_bytes() for n in before} == before
    assert (run / "config.json").exists()


def test_run_files_without_config_json_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_bytes(b"someone's weights")
    assert cli_train(tmp_path, "--set", "task.steps=8") == 2
    assert "holds run files (model.pt) but no config.json" in one_error_line(capsys)
    assert (out / "model.pt").read_bytes() == b"someone's weights"


def test_stale_checkpoint_and_temp_files_are_cleaned(tmp_path, reference):
    """A kill between metrics.json and the checkpoint's removal, and a kill mid-write."""
    run, _ = reference
    out = tmp_path / "run"
    train(run, out, quiet=True, stop_after=13)
    ck = (out / "ckpt.pt").read_bytes()
    train(run, out, quiet=True)
    (out / "ckpt.pt").write_bytes(ck)
    (out / "ckpt.prev.pt").write_bytes(ck)
    (out / "ckpt.pt.tmp").write_bytes(ck[:100])
    (out / "metrics.json.tmp").write_text("{")
    assert train(run, out, quiet=True)["steps"] == 24
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([".optirep.lock", "config.json", "features.npz", "metrics.json", "metrics.jsonl", "model.pt"])


def test_second_writer_on_a_run_directory_gets_a_clear_error(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; os.makedirs(sys.argv[1]); "
         "fd = os.open(sys.argv[1] + '/.optirep.lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "os.write(fd, f'pid {os.getpid()} on {os.uname().nodename}'.encode()); "
         "print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli_train(tmp_path, "--set", "task.steps=8", exp=exp) == 2
        line = one_error_line(capsys)
        assert f"{out} is being written by another optirep train (pid {holder.pid} on " in line
    finally:
        holder.kill()
        holder.wait()
    assert cli_train(tmp_path, "--set", "task.steps=8", exp=exp) == 0  # the lock ends with its holder


def test_load_checkpoint_rejects_a_legacy_or_foreign_file(tmp_path):
    from optirep import runio

    p = tmp_path / "ckpt.pt"
    torch.save({"state": {"step": 1}}, p)
    with pytest.raises(runio.RunFileError, match="no integrity trailer"):
        runio.load_checkpoint(p)


# ----------------------------------------------------------------------------- 4. a killed fetch's temp files
def test_fetch_removes_the_temp_files_of_a_killed_fetch_only(tmp_path):
    import socket

    from test_data_fixtures import real_mirror

    from optirep.data import fetch as fetch_mod

    mirror = real_mirror()
    if mirror is None:
        pytest.skip("no offline mirror beside the checkout")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = socket.gethostname()
    dest = tmp_path / "data" / "tinyshakespeare"
    dest.mkdir(parents=True)
    stale_file = dest / f".input.txt.@{host}@{dead}@0123abcd.part"
    stale_file.write_text("first half of a download")
    stale_dir = dest / f".hf.@{host}@{dead}@x1y2.part"
    stale_dir.mkdir()
    (stale_dir / "train.parquet").write_text("partial")
    running = dest / f".input.txt.@{host}@{os.getpid()}@beefcafe.part"  # a fetch still running: kept
    running.write_text("in progress")
    assert fetch_mod.main(["tinyshakespeare", "--root", str(tmp_path / "data"), "--mirror", str(mirror), "--no-deps"]) == 0
    assert not stale_file.exists() and not stale_dir.exists() and running.exists()
    assert (dest / "input.txt").is_file()


# ----------------------------------------------------------------------------- 5. workflow arguments
@pytest.mark.slow  # Snakemake builds the DAG (15-40 s on 2 cores)
def test_workflow_data_root_and_a_mirror_path_with_spaces_reach_fetch_and_train(tmp_path):
    import shlex

    from test_data_fixtures import real_mirror
    from test_workflow import ENV, ROOT

    real = real_mirror()
    if real is None:
        pytest.skip("no offline mirror beside the checkout")
    smoke, TASK32 = config.load_experiment(ROOT / "experiments" / "smoke.yaml"), "digits32_resnet18"
    mirror, root = tmp_path / "mirror dir", tmp_path / "data root"
    mirror.mkdir()
    for d in ("tinyshakespeare", "gpt2"):
        (mirror / d).symlink_to(real / d)
    cmd = ["snakemake", "-n", "-p", "--configfile", "experiments/workflow-smoke.yaml", "--config",
           'fetch=["tinyshakespeare"]', f"data_root={root}", f"mirror={mirror}", "--", "results/data/tinyshakespeare.fetched",
           f"results/smoke/runs/{TASK32}/adamw/{config.spec_hash(smoke, TASK32, 'adamw')}/seed0/metrics.json"]
    res = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [ln.strip().removeprefix("Shell command:").strip() for ln in (res.stdout + res.stderr).splitlines()]
    fetch_cmd = next(ln for ln in lines if ln.startswith("optirep fetch"))
    train_cmd = next(ln for ln in lines if ln.startswith("optirep train"))
    args = shlex.split(train_cmd)
    assert args[args.index("--mirror") + 1] == str(mirror) and args[args.index("--data-root") + 1] == str(root)
    # run the fetch rule's command as Snakemake would (its log path is relative to the checkout)
    work = tmp_path / "work"
    (work / "results" / "logs" / "fetch").mkdir(parents=True)
    done = subprocess.run(["bash", "-c", fetch_cmd], cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    log = (work / "results" / "logs" / "fetch" / "tinyshakespeare.log").read_text()
    assert done.returncode == 0, log
    assert (root / "tinyshakespeare" / ".complete").is_file() and (root / "gpt2" / ".complete").is_file()


@pytest.mark.slow  # Snakemake builds the DAG (15-40 s on 2 cores)
def test_runs_deleted_after_aggregation_are_rerun_by_the_workflow(tmp_path):
    """Aggregates and claims present, run directories gone: before, `Nothing to be done`."""
    from test_workflow import ENV, _copy_checkout, job_counts

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_checkout(repo)
    cfg = config.load_experiment(repo / "experiments" / "smoke.yaml")
    smoke = repo / "results" / "smoke"
    for task in cfg["tasks"]:
        (smoke / "aggregate").mkdir(parents=True, exist_ok=True)
        (smoke / "aggregate" / f"{task}.json").write_text("{}")
    (smoke / "claims.json").write_text("{}")
    (smoke / "paper" / "generated").mkdir(parents=True)
    (smoke / "paper" / "generated" / "numbers.tex").write_text("")
    res = subprocess.run(["snakemake", "-n", "--configfile", "experiments/workflow-smoke.yaml", "--config", "latex=False"],
                         cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" not in res.stdout + res.stderr
    counts = job_counts(res.stdout)
    assert runs_planned(counts, cfg) == len(config.grid(cfg)) and counts["aggregate"] == len(cfg["tasks"])
    assert counts["claims"] == 1


def runs_planned(counts: dict, cfg: dict) -> int:
    """Final runs a dry run plans: one per `train` job, every seed per `train_seeds_<exp>` job (rules/batch.smk)."""
    return counts.get("train", 0) + counts.get(f"train_seeds_{cfg['name']}", 0) * len(cfg["seeds"])


@pytest.mark.parametrize("hp,words", [
    ({"lr": "1e-3x"}, ["optimizers.adamw.hp.lr", "'1e-3x'", "finite number"]),
    ({"lr": 0}, ["optimizers.adamw.hp.lr", "> 0"]),
    ({"lr": 1e-3, "betas": [0.9, 1.0]}, ["optimizers.adamw.hp.betas", "[0, 1)"]),
])
def test_validate_checks_hyperparameter_types_and_ranges(tmp_path, capsys, hp, words):
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["adamw"]["hp"] = hp
    assert cli.main(["validate", str(write_experiment(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_derive_hp_names_a_cut_metrics_jsonl(tmp_path, finished, capsys):
    exp, run = _copy_run(finished, tmp_path)
    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["optimizers"]["ctl"] = {"name": "adamw", "lr_from": {"label": "adamw", "keys": ["x"]}}
    cfg["tasks"][TASK]["optimizers"].append("ctl")
    exp = write_experiment(tmp_path, cfg)
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: len(text) - 20])
    assert cli.main(["derive-hp", "--experiment", str(exp), "--optimizer", "ctl", "--runs", str(run),
                     "--out", str(tmp_path / "hp.json")]) == 2
    line = one_error_line(capsys)
    assert f"{run / 'metrics.jsonl'}:" in line and "truncated" in line


def _all_outputs_present(repo: Path, workflow: str) -> list[Path]:
    """Create every output of the workflow's DAG with one old mtime (a finished study); returns them."""
    from test_workflow import ENV

    res = subprocess.run(["snakemake", "--summary", "--cores", "1", "--configfile", workflow, "--config", "latex=False"],
                         cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = [repo / line.split("\t")[0] for line in res.stdout.splitlines()[1:] if "\t" in line]
    assert outs
    t0 = 1_700_000_000
    for p in outs:
        p.parent.mkdir(parents=True, exist_ok=True)
        # a bracketing round is read by the DAG (a checkpoint): a finished sweep stopped at round 0
        p.write_text('{"status": "done"}' if p.parent.name == "bracket" else "{}")
        os.utime(p, (t0 + 10, t0 + 10))
    for p in (repo / "experiments").iterdir():
        os.utime(p, (t0, t0))
    return outs


@pytest.mark.slow  # Snakemake builds the DAG (15-40 s on 2 cores)
def test_editing_one_task_reruns_only_that_task_into_a_new_place(tmp_path):
    """Before: editing one task's steps rescheduled every job (every tuned label's tuning too) and deleted every
    finished metrics.json. Now: only that task's tuning and runs, at its new spec; nothing is deleted."""
    from test_workflow import ENV, _copy_checkout, job_counts

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_checkout(repo)
    outs = _all_outputs_present(repo, "experiments/workflow-smoke.yaml")
    exp = repo / "experiments" / "smoke.yaml"
    cfg = config.load_experiment(exp)
    original = exp.read_text()
    tuning_rules = ("tune_lr", "bracket", "sweep", "tune_random", "select")

    def dry_run_after(old: str, new: str) -> tuple[dict, set, dict]:
        """Job counts, the changed (task, label) pairs and the planned (kind, task, label, spec) after one edit."""
        assert original.count(old) == 1, old
        exp.write_text(original.replace(old, new))
        edited = config.load_experiment(exp)
        res = subprocess.run(["snakemake", "-n", "--configfile", "experiments/workflow-smoke.yaml", "--config",
                              "latex=False"], cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        changed = {(t, lb) for t, tk in cfg["tasks"].items() for lb in tk["optimizers"]
                   if config.spec_hash(edited, t, lb) != config.spec_hash(cfg, t, lb)}
        planned = set(re.findall(r"output: results/smoke/(runs|derived|tune)/(\w+)/(\w+)/([^/\s]+)/", res.stdout))
        # every planned job of the runs, derived hp and tuning trees is of a changed label, at its new spec
        wrong = [p for p in planned if not ((p[1], p[2]) in changed and p[3] == config.spec_hash(edited, p[1], p[2]))]
        assert planned and not wrong, wrong
        counts = job_counts(res.stdout)
        assert runs_planned(counts, cfg) == len(changed) * len(cfg["seeds"]), (counts, changed)
        tuned = {(t, lb) for t, lb in changed if cfg["optimizers"][lb].get("tune")}
        assert all(counts.get(r, 0) == len(tuned) for r in ("bracket", "sweep", "select")), (counts, tuned)
        assert all(p.exists() for p in outs), "a dry run after the edit deletes nothing"
        return counts, changed, planned

    # One untuned task's steps: only its runs (no tuning anywhere).
    counts, changed, _ = dry_run_after("    steps: 12\n", "    steps: 14\n")
    assert changed == {("digits32_resnet18", lb) for lb in cfg["tasks"]["digits32_resnet18"]["optimizers"]}
    assert not any(counts.get(r) for r in tuning_rules)
    # One task with tuned labels: its runs and its labels' tuning, nothing of another task.
    counts, changed, planned = dry_run_after("    steps: 30\n", "    steps: 32\n")
    assert changed == {("mnist1d_all", lb) for lb in cfg["tasks"]["mnist1d_all"]["optimizers"]}
    assert counts["select"] == 2 and {p[2] for p in planned if p[0] == "tune"} == {"adamw_tuned", "biostatis_v6_tuned"}
    # One tuned label's hyperparameters: that label and the label whose sweep is matched to it.
    counts, changed, _ = dry_run_after("search_space: {lr: {min: 1.0e-4, max: 1.0e-1, scaling: log}}\n  adam:",
                                       "search_space: {lr: {min: 1.0e-4, max: 1.0e-1, scaling: log}}\n"
                                       "    hp: {weight_decay: 1.0e-2}\n  adam:")
    assert changed == {("mnist1d_all", "adamw_tuned"), ("mnist1d_all", "biostatis_v6_tuned")}
    # (aggregates, claims and the paper read the experiment file and are rewritten; they hold no training)
    assert all(p.exists() for p in outs), "a dry run after the edit deletes nothing"


def test_a_tuning_tree_written_before_the_spec_level_is_migrated_only_when_it_matches(tmp_path):
    """Legacy tune/<task>/<label>/{lr,bracket,sweep.json,selected.json}: moved into <spec> when its runs are the
    current config's; one of another config stays, and then the tuned label's final runs stay too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import migrate_results_layout

    cfg = json.loads(json.dumps(EXPERIMENT))
    cfg["tasks"][TASK].update(steps=4, eval_every=2, features=0)
    exp = write_experiment(tmp_path, cfg)
    res = tmp_path / "results" / "unit"
    spec = config.spec_hash(config.load_experiment(exp), TASK, "sgd")
    for name, extra in (("same", []), ("other", ["task.steps=6"])):
        legacy = res / name / "tune" / TASK / "sgd"
        assert cli.main(["tune-trial", "--experiment", str(exp), "--task", TASK, "--optimizer", "sgd", "--lr-point",
                         "0", "--out", str(legacy / "lr" / "k0"), "--quiet"]) == 0
        if extra:  # a run of another config in the tree (as an older experiment file would have made)
            run_dir = legacy / "lr" / "k0" / "seed100"
            old = json.loads((run_dir / "config.json").read_text())
            old["config_hash"] = "0" * 16
            (run_dir / "config.json").write_text(json.dumps(old))
        (legacy / "sweep.json").write_text("{}")
        (legacy / "selected.json").write_text("{}")
        (res / name / "runs" / TASK / "sgd" / "seed0").mkdir(parents=True)
        moved, kept = migrate_results_layout.migrate(exp, res / name)
        if not extra:
            assert (legacy / spec / "lr" / "k0" / "trial.json").is_file() and (legacy / spec / "selected.json").is_file()
            assert not (legacy / "lr").exists() and len(moved) == 3, moved
        else:
            assert not moved and (legacy / "lr" / "k0" / "trial.json").is_file() and not (legacy / spec).exists()
            assert any("seed100: another config" in k for k in kept), kept
            assert any("its tuning tree was not migrated" in k for k in kept), kept


def test_a_tree_written_before_the_spec_level_is_read_and_migrated(tmp_path):
    """Legacy runs/<task>/<label>/seed<s>: aggregate still reads it; the script moves matching runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import migrate_results_layout

    from optirep.report.aggregate import aggregate_task, load_experiment

    exp = write_experiment(tmp_path)
    res = tmp_path / "results" / "unit"
    legacy = res / "runs" / TASK / "adamw"
    for seed, extra in ((0, []), (1, ["--set", "task.steps=8"])):  # seed 1: another config, stays
        assert cli.main(["train", "--experiment", str(exp), "--task", TASK, "--optimizer", "adamw", "--seed",
                         str(seed), "--out", str(legacy / f"seed{seed}"), "--quiet", *extra]) == 0
    agg = aggregate_task(load_experiment(exp), res, TASK)
    assert agg["per_label"]["adamw"]["seeds"] == [0, 1]
    moved, kept = migrate_results_layout.migrate(exp, res)
    spec = config.spec_hash(config.load_experiment(exp), TASK, "adamw")
    assert (legacy / spec / "seed0" / "metrics.json").is_file() and (legacy / "seed1" / "metrics.json").is_file()
    assert len(moved) == 1 and any("seed1: another config" in k for k in kept)
    agg = aggregate_task(load_experiment(exp), res, TASK)
    assert agg["per_label"]["adamw"]["seeds"] == [0]
