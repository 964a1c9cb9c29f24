"""`optirep <subcommand>`: every step of the study is one of these commands.

    optirep optimizers                          # the registry
    optirep fetch tinyshakespeare --mirror ../shared/datasets
    optirep validate experiments/smoke.yaml     # schema + registry checks, prints the run grid
    optirep train --experiment E --task T --optimizer L --seed S --out DIR [--set k=v] [--hp-json F]
    optirep train ... --seed 0 --out D0 --seed 1 --out D1    # several runs in one process (optirep.launch)
    optirep tune-trial --experiment E --task T --optimizer L (--lr-point K | --random J --sweep F) --out DIR
    optirep bracket --experiment E --task T --optimizer L --points DIR... [--match F] --out round.json
    optirep select --experiment E --task T --optimizer L --sweep sweep.json --trials DIR... --out selected.json
    optirep derive-hp --experiment E --optimizer L --runs DIR... --out hp.json   # effective-LR control
    optirep timing --experiment E --task T --out FILE.json   # interleaved step cost of the task's optimizers
    optirep analyze RUN_DIR --out FILE.json
    optirep aggregate / claims / readme ...     # the report layer (see optirep.report)

Snakemake rules and DVC stages call exactly these commands, so every step also runs by hand.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def _train(argv: list[str]) -> int:
    from optirep import launch, runio
    from optirep.preempt import checkpoint_on_sigterm

    p = argparse.ArgumentParser(prog="optirep train", description="Train one (task, optimizer, seed) run, or "
                                "several in one process (repeat --seed and --out, one pair per run).")
    p.add_argument("--experiment", required=True, help="experiments/X.yaml")
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True, help="an optimizer label of the experiment")
    p.add_argument("--seed", type=int, required=True, action="append", help="run seed (one, or one per --out)")
    p.add_argument("--out", required=True, type=Path, action="append", help="run directory (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. task.steps=100 or optimizer.hp.lr=0.01 (repeatable)")
    p.add_argument("--hp-json", type=Path, help="JSON file whose 'hp' mapping overrides the optimizer hp")
    _data_args(p)
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="leave after N steps, checkpointed (rerun the same command to continue)")
    a = p.parse_args(argv)
    runio.validate_stop_after(a.stop_after)
    runs = launch.plan_runs(a.seed, a.out)
    checkpoint_on_sigterm()  # SIGTERM: the run checkpoints and leaves with status 143 (main)
    return launch.train_runs(a.experiment, a.task, a.optimizer, runs, a.set, a.hp_json, data_root=a.data_root,
                             mirror=a.mirror, quiet=a.quiet, stop_after=a.stop_after)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="dataset root (default $OPTIREP_DATA or ./data)")
    p.add_argument("--mirror", default=None, help="offline mirror directory (default $OPTIREP_DATA_MIRROR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _tuned_label(cfg: dict, label: str, source: str) -> dict:
    from optirep import config

    o = cfg["optimizers"].get(label)
    if o is None or not o.get("tune"):
        raise config.ConfigError(f"{source}: optimizer label {label!r} has no tune: true "
                                 f"(tuned labels: {', '.join(l for l, x in cfg['optimizers'].items() if x.get('tune'))})")
    return o


def _tune_trial(argv: list[str]) -> int:
    """Train one tuning configuration at every tuning seed (DIR/seed<s>/), then write DIR/trial.json last."""
    from optirep import runio
    from optirep import config, tuning
    from optirep.preempt import checkpoint_on_sigterm
    from optirep.train import atomic_write_json, train

    p = argparse.ArgumentParser(prog="optirep tune-trial", description=_tune_trial.__doc__)
    p.add_argument("--experiment", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True, help="a tuned label")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--lr-point", type=int, metavar="K", help="LR sweep grid index (negative below the range)")
    g.add_argument("--random", type=int, metavar="J", help="random-search trial index (needs --sweep)")
    p.add_argument("--sweep", type=Path, help="the label's sweep.json (random trials centre on its best lr)")
    p.add_argument("--out", required=True, type=Path, help="trial directory")
    _data_args(p)
    a = p.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    o = _tuned_label(cfg, a.optimizer, a.experiment)
    t = cfg["tuning"]
    if a.lr_point is not None:
        hp = {**tuning.base_hp(o), "lr": tuning.lr_at(o["search_space"]["lr"]["min"], t["lr_sweep"]["per_decade"],
                                                      a.lr_point)}
        trial_id, stage = f"lr/k{a.lr_point}", "lr_sweep"
    else:
        if a.sweep is None:
            p.error("--random needs --sweep (the sweep record whose best lr the trials centre on)")
        sweep = runio.read_json(a.sweep)
        trials = tuning.random_trials(cfg, a.optimizer, sweep["best"]["lr"])
        if not 0 <= a.random < len(trials):
            raise config.ConfigError(f"--random {a.random}: {a.experiment} has tuning.random_trials "
                                     f"{len(trials)} (0..{len(trials) - 1})")
        hp, trial_id, stage = trials[a.random], f"random/trial{a.random}", "random"
    dirs = {}
    checkpoint_on_sigterm()  # SIGTERM: the current seed's run checkpoints; status 143 (main)
    for s in t["seeds"]:
        run = config.resolve_run(cfg, a.task, a.optimizer, s, hp_override=hp, source=a.experiment)
        dirs[s] = a.out / f"seed{s}"
        train(run, dirs[s], data_root=a.data_root, mirror=a.mirror, quiet=a.quiet)
    rec = tuning.summarize_trial(trial_id, stage, hp, dirs, (o.get("gain") or {}).get("keys"))
    rec.update(task=a.task, label=a.optimizer)
    atomic_write_json(a.out / "trial.json", rec)
    print(f"{a.out}: {trial_id} lr {hp['lr']:.3g}: mean {t['select_on']} {rec[t['select_on']]:.4g} over seeds {t['seeds']}")
    return 0


def _read_trials(dirs: list[Path]) -> list[dict]:
    from optirep import runio
    from optirep.tuning import TuningError

    out = []
    for d in dirs:
        f = Path(d) / "trial.json"
        if not f.exists():
            raise TuningError(f"{f} does not exist: the tuning trial did not finish")
        out.append(runio.read_json(f))
    return out


def _bracket(argv: list[str]) -> int:
    """One round of the LR sweep: extend at an edge (or for effective-LR coverage) or stop, as JSON."""
    from optirep import runio
    from optirep import config, tuning
    from optirep.train import atomic_write_json

    p = argparse.ArgumentParser(prog="optirep bracket", description=_bracket.__doc__)
    p.add_argument("--experiment", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--points", nargs="+", required=True, type=Path, help="every evaluated sweep point dir")
    p.add_argument("--match", type=Path, help="the gain.match label's sweep.json")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    _tuned_label(cfg, a.optimizer, a.experiment)
    match = runio.read_json(a.match) if a.match else None
    rec = tuning.bracket_round(cfg, a.optimizer, _read_trials(a.points), match)
    rec["task"] = a.task
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, rec)
    print(f"{a.out}: best lr {rec['best']['lr']:.3g} ({'interior' if rec['interior'] else rec['edge'] + ' edge'}); "
          f"{rec['status']}{' ' + str(rec['next']) if rec['next'] else ''}"
          f"{'; bound hit: ' + rec['bound_hit'] if rec['bound_hit'] else ''}")
    return 0


def _select(argv: list[str]) -> int:
    from optirep import runio
    from optirep import config, tuning
    from optirep.train import atomic_write_json

    p = argparse.ArgumentParser(prog="optirep select", description="Pick the best tuning configuration on validation.")
    p.add_argument("--experiment", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--sweep", required=True, type=Path, help="the label's sweep.json")
    p.add_argument("--trials", nargs="*", default=[], type=Path, help="random-search trial directories")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    _tuned_label(cfg, a.optimizer, a.experiment)
    chosen = tuning.select(runio.read_json(a.sweep), _read_trials(a.trials), cfg["tuning"]["select_on"])
    chosen.update(task=a.task, label=a.optimizer)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, chosen)
    print(f"{a.out}: {chosen['trial']} {chosen['select_on']}={chosen['value']:.4g} with {chosen['hp']}")
    return 0


def _derive_hp(argv: list[str]) -> int:
    """Effective-LR control: lr = source lr x the product of diagnostics, averaged over the run and its seeds."""
    from optirep import runio
    from optirep import config
    from optirep.train import atomic_write_json
    from optirep.tuning import run_gain

    p = argparse.ArgumentParser(prog="optirep derive-hp", description=_derive_hp.__doc__)
    p.add_argument("--experiment", required=True)
    p.add_argument("--optimizer", required=True, help="the label with lr_from")
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="run dirs of the lr_from label")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    spec = cfg["optimizers"][a.optimizer].get("lr_from")
    if not spec:
        raise config.ConfigError(f"{a.experiment}: optimizers.{a.optimizer} has no lr_from")
    gains, lrs = [], []
    for d in a.runs:
        gains.append(run_gain(d, spec["keys"]))
        lrs.append(runio.read_json(d / "metrics.json")["hp"]["lr"])
    gain = sum(gains) / len(gains)
    hp = {"lr": lrs[0] * gain}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, {"hp": hp, "source_label": spec["label"], "keys": spec["keys"], "gain": gain,
                              "source_lr": lrs[0], "per_run_gain": gains})
    print(f"{a.out}: lr = {lrs[0]:.4g} x {gain:.4f} = {hp['lr']:.4g}")
    return 0


def _optimizers(argv: list[str]) -> int:
    from optirep import optim

    argparse.ArgumentParser(prog="optirep optimizers", description="List the optimizer registry.").parse_args(argv)
    for name in optim.available():
        e = optim.spec(name)
        print(f"{name:28s} baseline={e.baseline:7s} {e.summary}")
    return 0


def _validate(argv: list[str]) -> int:
    from optirep import config

    return config.main(argv)


def _delegate(module: str) -> callable:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(argv)

    return run


COMMANDS = {
    "train": _train,
    "tune-trial": _tune_trial,
    "bracket": _bracket,
    "select": _select,
    "derive-hp": _derive_hp,
    "optimizers": _optimizers,
    "validate": _validate,
    "fetch": _delegate("optirep.data.fetch"),
    "timing": _delegate("optirep.timing"),
    "analyze": _delegate("optirep.analysis.run"),
    "aggregate": _delegate("optirep.report.aggregate"),
    "claims": _delegate("optirep.report.claims"),
    "power": _delegate("optirep.report.power"),
    "readme": _delegate("optirep.report.readme"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        from optirep import __version__
        from optirep.provenance import git_sha

        print(f"optirep {__version__} (commit {git_sha()})")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"optirep: unknown command {cmd!r} (allowed: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    from optirep.config import ConfigError
    from optirep.runio import RunIOError
    from optirep.preempt import Preempted
    from optirep.tuning import TuningError

    try:
        return COMMANDS[cmd](rest)
    except (ConfigError, TuningError, RunIOError, FileNotFoundError, KeyError) as exc:
        print(f"optirep {cmd}: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:  # checkpointed on SIGTERM; the rerun resumes
        print(exc, file=sys.stderr)
        return 128 + signal.SIGTERM  # the shell's status for "ended by SIGTERM": the job is not finished


if __name__ == "__main__":
    raise SystemExit(main())
