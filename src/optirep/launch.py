"""Start-up of `optirep train`: recognise finished runs cheaply, run several runs in one process.

    optirep train --experiment E --task T --optimizer L --seed 0 --out D0 --seed 1 --out D1 ...

A short run (the low-data study's MLPs train in about a second) costs far less than the process that
runs it: importing torch, dynamo (every torch optimizer's constructor imports it), scipy and the
data code takes seconds. So:

* A finished run is recognised before torch is imported (`finished_record`): its `metrics.json` and
  `config.json` exist, and `config.json` matches the run this command asks for in everything the
  experiment file and the command line decide (`config.request_run`). What the registry adds
  (`optimizer.resolved_hp`, the closure default) is not recomputed for a finished run; any other
  difference falls through to `optirep.train.train`, which refuses a foreign run directory.
* Several `--out` run directories in one command run one after another in one process, paying the
  imports once (`plan_runs` pairs them with `--seed`). Each run seeds torch, numpy and
  `random` itself (`optirep.train.train`), so its results equal those of a run alone
  (tests/test_launch.py checks metrics and weights). A failing run does not stop the others; the
  command then exits 1.

Heavy imports happen only when a run needs them: torch when a run trains (scipy never).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


from optirep import config

#: what config.json holds beyond the request: the registry's resolution and the hash over both.
_RESOLVED = ("config_hash",)
_RESOLVED_OPT = ("resolved_hp", "closure")


def plan_runs(seeds: list[int], outs: list[Path]) -> list[tuple[int, Path]]:
    """(seed, out) per run: `outs` in order, with one seed for all or one per out.

    Raises config.ConfigError when the counts do not pair up or an out directory repeats.
    """
    n = len(outs)
    if len(seeds) not in (1, n):
        raise config.ConfigError(f"--seed given {len(seeds)} times for {n} --out directories "
                                 f"(give one --seed for all, or one per --out)")
    if len({Path(o).resolve() for o in outs}) != n:
        raise config.ConfigError("--out: the same run directory is given more than once")
    seeds = seeds * n if len(seeds) == 1 else seeds
    return [(seeds[i], Path(outs[i])) for i in range(n)]


def _strip(run: dict) -> dict:
    """`run` without what the registry resolves, as JSON gives it back (tuples as lists)."""
    run = json.loads(json.dumps(run, default=str))
    for k in _RESOLVED:
        run.pop(k, None)
    for k in _RESOLVED_OPT:
        run.get("optimizer", {}).pop(k, None)
    return run


def finished_record(experiment: str | Path, task: str, label: str, seed: int, out: Path,
                    overrides: list[str] = (), hp_override: dict | None = None) -> dict | None:
    """The metrics.json of the finished run this request made at `out`, read without importing torch.

    None when `out` holds no finished run, or one this check cannot match (a different or
    unreadable config, an invalid experiment file): the caller then takes the full path, which
    validates everything and reports the problem.
    """
    final, cfg_file = Path(out) / "metrics.json", Path(out) / "config.json"
    if not (final.is_file() and cfg_file.is_file()):
        return None
    try:
        cfg = config.load_yaml(Path(experiment).read_text())
        want = config.request_run(cfg, task, label, seed, list(overrides), hp_override, str(experiment))
        have = json.loads(cfg_file.read_text())
        record = json.loads(final.read_text())
    except Exception:  # noqa: BLE001 - anything unusual goes to the full path, which explains it
        return None
    want_closure = want.get("optimizer", {}).get("closure")
    if want_closure is not None and have.get("optimizer", {}).get("closure") != want_closure:
        return None
    if _strip(want) != _strip(have) or record.get("config_hash") != have.get("config_hash"):
        return None
    return record


class _Experiment:
    """The experiment file, loaded and validated on first use (the validation imports torch)."""

    def __init__(self, path: str):
        self.path, self._cfg = path, None

    @property
    def cfg(self) -> dict:
        if self._cfg is None:
            self._cfg = config.load_experiment(self.path)
        return self._cfg


def train_runs(experiment: str, task: str, label: str, runs: list[tuple[int, Path]],
               overrides: list[str] = (), hp_json: Path | None = None, **train_kwargs: Any) -> int:
    """Train every (seed, out) of `runs` in this process; prints one line per run, returns an exit code.

    With one run, errors propagate (the CLI reports them); with several, each failing run is
    reported on stderr and the others still run; the exit code is then 1.
    """
    exp = _Experiment(experiment)
    hp_file = None
    if hp_json is not None:
        from optirep import runio

        doc = runio.read_json(Path(hp_json))
        hp_file = doc.get("hp") if isinstance(doc, dict) else None
        if not isinstance(hp_file, dict):
            raise config.ConfigError(f"--hp-json {hp_json}: expected a mapping 'hp', got {hp_file!r}")
    failed = 0
    trained = 0  # runs trained in this process so far: the first one's peak RSS is its own
    for seed, out in runs:
        try:
            hp = hp_file
            rec = finished_record(experiment, task, label, seed, out, overrides, hp)
            if rec is not None:
                if not train_kwargs.get("quiet"):
                    print(f"{out}: already finished", file=sys.stderr)
            else:
                from optirep.train import train

                run = config.resolve_run(exp.cfg, task, label, seed, list(overrides), hp_override=hp, source=experiment)
                own_peak = reset_peak_rss() or trained == 0
                trained += 1
                rec = train(run, out, own_peak_memory=own_peak, **train_kwargs)
            print(summary(out, rec, train_kwargs.get("stop_after")))
        except Exception as exc:
            from optirep.preempt import Preempted

            if len(runs) == 1 or isinstance(exc, Preempted):  # SIGTERM: leave now, the rerun resumes
                raise
            failed += 1
            if not isinstance(exc, (config.ConfigError, FileNotFoundError, KeyError)):
                traceback.print_exc()
            print(f"optirep train: error: {out}: {exc}", file=sys.stderr)
    if failed:
        print(f"optirep train: {failed} of {len(runs)} runs failed", file=sys.stderr)
    return 1 if failed else 0


def summary(out: Path, rec: dict | None, stop_after: int | None = None) -> str:
    """The one line `optirep train` prints per run."""
    if rec is None:
        return f"{out}: stopped after {stop_after} steps (checkpointed); rerun to continue"
    status = "DIVERGED at step %s" % rec["diverged_step"] if rec["diverged"] else f"final_test {rec['final_test']:.4g}"
    return f"{out}: {rec['metric']} {status} ({rec['steps']} steps, {rec['wall_time_s']:.1f} s)"


# ----------------------------------------------------------------------------- peak memory per run
def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux: `5` to /proc/self/clear_refs, see
    proc(5)), so that the next run's `peak_memory_bytes` is its own.

    Returns False where the kernel refuses the write, or accepts it without effect (some sandboxes:
    the peak VmHWM then still exceeds the current VmRSS by more than 1 MiB right after the write).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    mem = _proc_status_kib("VmHWM", "VmRSS")
    if mem is None:
        return False
    hwm, rss = mem
    return hwm <= rss + 1024


def _proc_status_kib(*fields: str) -> tuple[int, ...] | None:
    """The named fields of /proc/self/status, in KiB, read in one go; None where unavailable."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in fields:
            found[key] = int(value.split()[0])
    return tuple(found[f] for f in fields) if len(found) == len(fields) else None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since start or the last `reset_peak_rss()`, in bytes
    (Linux VmHWM); elsewhere getrusage's ru_maxrss (kilobytes on Linux, bytes on macOS)."""
    mem = _proc_status_kib("VmHWM")
    if mem is not None:
        return mem[0] * 1024
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
