"""Job start-up (optirep.launch): finished runs found without torch, several runs per process.

The Snakemake rules that use it (rules/batch.smk) are counted by tests/test_workflow.py's dry runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import EXPERIMENT, write_experiment

from optirep import cli, config, launch

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_time_s", "time_per_step_s", "time_per_opt_step_s", "peak_memory_bytes", "warmup_time_s",
          "warmup_opt_time_s"}


def _train(exp: Path, *args: str, label: str = "adamw") -> int:
    return cli.main(["train", "--experiment", str(exp), "--task", "mnist1d_mlp", "--optimizer", label,
                     "--quiet", *args])


def _same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMING} == {k: v for k, v in mb.items() if k not in TIMING}
    wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "metrics.jsonl").read_text().count("\n") == (b / "metrics.jsonl").read_text().count("\n")


def test_several_seeds_in_one_process_equal_runs_alone(tmp_path):
    exp = write_experiment(tmp_path)
    assert _train(exp, "--seed", "1", "--out", str(tmp_path / "alone1"), "--set", "task.steps=8") == 0
    # a run before it in the same process (another seed) must not change its results
    assert _train(exp, "--seed", "0", "--out", str(tmp_path / "b0"), "--seed", "1", "--out", str(tmp_path / "b1"),
                  "--set", "task.steps=8") == 0
    _same_run(tmp_path / "alone1", tmp_path / "b1")
    assert json.loads((tmp_path / "b0" / "config.json").read_text())["seed"] == 0


def test_run_pairing_errors_name_the_problem(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    assert launch.plan_runs([3], outs) == [(3, outs[0]), (3, outs[1])]
    assert launch.plan_runs([0, 1], outs) == [(0, outs[0]), (1, outs[1])]
    with pytest.raises(config.ConfigError, match="--seed given 3 times for 2 --out"):
        launch.plan_runs([0, 1, 2], outs)
    with pytest.raises(config.ConfigError, match="more than once"):
        launch.plan_runs([0, 1], [outs[0], outs[0]])


def test_a_failing_run_does_not_stop_the_others(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"config_hash": "not-this-run"}))  # a foreign run directory
    code = _train(exp, "--seed", "0", "--out", str(bad), "--seed", "1", "--out", str(tmp_path / "ok"),
                  "--set", "task.steps=4")
    assert code == 1
    assert (tmp_path / "ok" / "metrics.json").exists()
    err = capsys.readouterr().err
    assert f"{bad}: " in err and "different config" in err and "1 of 2 runs failed" in err


def test_finished_run_is_recognised_without_importing_torch(tmp_path):
    exp = write_experiment(tmp_path)
    out = tmp_path / "run"
    args = ["--seed", "0", "--out", str(out), "--set", "task.steps=4"]
    assert _train(exp, *args) == 0
    assert launch.finished_record(exp, "mnist1d_mlp", "adamw", 0, out, ["task.steps=4"]) is not None
    # anything the request changes is not this finished run: the full path decides (and refuses it)
    assert launch.finished_record(exp, "mnist1d_mlp", "adamw", 0, out, ["task.steps=5"]) is None
    assert launch.finished_record(exp, "mnist1d_mlp", "adamw", 1, out, ["task.steps=4"]) is None
    code = ("import sys; from optirep import cli; "
            f"rc = cli.main(['train', '--experiment', {str(exp)!r}, '--task', 'mnist1d_mlp', '--optimizer', 'adamw', "
            f"'--quiet', *{args!r}]); "
            "print('torch' in sys.modules, 'scipy' in sys.modules); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False False"
    assert "final_test" in res.stdout  # the summary line, from the finished run's metrics.json


def test_training_path_imports_no_scipy():
    code = "import sys, optirep.cli, optirep.tuning, optirep.train, optirep.launch; print('scipy' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def test_analyze_takes_several_run_dirs(tmp_path):
    exp = write_experiment(tmp_path)
    assert _train(exp, "--seed", "0", "--out", str(tmp_path / "r0"), "--seed", "1", "--out", str(tmp_path / "r1"),
                  "--set", "task.steps=4") == 0
    outs = [tmp_path / "a0.json", tmp_path / "a1.json"]
    # pairs as the batch rule writes them (RUN --out FILE RUN --out FILE)
    assert cli.main(["analyze", str(tmp_path / "r0"), "--out", str(outs[0]), str(tmp_path / "r1"),
                     "--out", str(outs[1])]) == 0
    assert cli.main(["analyze", str(tmp_path / "r1"), "--out", str(tmp_path / "alone.json")]) == 0
    assert json.loads(outs[1].read_text()) == json.loads((tmp_path / "alone.json").read_text())
    assert json.loads(outs[0].read_text()) != json.loads(outs[1].read_text())


def test_peak_memory_is_per_run():
    if not launch.reset_peak_rss():
        pytest.skip("this kernel does not reset the peak RSS (/proc/self/clear_refs)")
    import mmap

    block = mmap.mmap(-1, 64 * 2**20)  # anonymous: unmapped on close, whatever the allocator keeps
    block.write(b"x" * len(block))  # touched, so resident
    high = launch.peak_rss_bytes()
    block.close()
    assert launch.reset_peak_rss()
    assert launch.peak_rss_bytes() < high - 32 * 2**20


def test_batch_without_a_peak_reset_records_no_borrowed_peak(tmp_path, monkeypatch):
    # a kernel that ignores clear_refs: the first run's peak is its own, a later run's would not be
    monkeypatch.setattr(launch, "reset_peak_rss", lambda: False)
    exp = write_experiment(tmp_path)
    assert _train(exp, "--seed", "0", "--out", str(tmp_path / "r0"), "--seed", "1", "--out", str(tmp_path / "r1"),
                  "--set", "task.steps=4") == 0
    peaks = [json.loads((tmp_path / d / "metrics.json").read_text())["peak_memory_bytes"] for d in ("r0", "r1")]
    assert peaks[0] > 0 and peaks[1] is None
