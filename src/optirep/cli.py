"""`optirep <subcommand>`: every step of the study is one of these commands.

    optirep optimizers                          # the registry
    optirep fetch tinyshakespeare --mirror ../shared/datasets
    optirep validate experiments/smoke.yaml     # schema + registry checks, prints the run grid
    optirep train --experiment E --task T --optimizer L --seed S --out DIR [--set k=v] [--trial K | --hp-json F]
    optirep select --experiment E --task T --optimizer L --trials DIR... --out selected.json
    optirep derive-hp --experiment E --optimizer L --runs DIR... --out hp.json   # effective-LR control
    optirep analyze RUN_DIR --out FILE.json
    optirep aggregate / claims / readme ...     # the report layer (see optirep.report)

Snakemake rules and DVC stages call exactly these commands, so every step also runs by hand.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def _train(argv: list[str]) -> int:
    from optirep import config, tuning
    from optirep.train import Preempted, atomic_write_json, checkpoint_on_sigterm, train  # noqa: F401

    p = argparse.ArgumentParser(prog="optirep train", description="Train one (task, optimizer, seed) run.")
    p.add_argument("--experiment", required=True, help="experiments/X.yaml")
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True, help="an optimizer label of the experiment")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. task.steps=100 or optimizer.hp.lr=0.01 (repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--trial", type=int, help="tuning trial index: hp from the experiment's search space")
    g.add_argument("--hp-json", type=Path, help="JSON file whose 'hp' mapping overrides the optimizer hp")
    p.add_argument("--data-root", default=None, help="dataset root (default $OPTIREP_DATA or ./data)")
    p.add_argument("--mirror", default=None, help="offline mirror directory (default $OPTIREP_DATA_MIRROR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="leave after N steps, checkpointed (rerun the same command to continue)")
    a = p.parse_args(argv)

    cfg = config.load_experiment(a.experiment)
    hp = None
    if a.trial is not None:
        o = cfg["optimizers"].get(a.optimizer)
        if o is None or not o.get("tune"):
            raise config.ConfigError(f"--trial: optimizer label {a.optimizer!r} has no tune: true in {a.experiment}")
        trials = tuning.sample_trials(o["search_space"], cfg["tuning"]["trials"], cfg["tuning"]["seed"])
        if not 0 <= a.trial < len(trials):
            raise config.ConfigError(f"--trial {a.trial}: the experiment has {len(trials)} trials (0..{len(trials) - 1})")
        hp = trials[a.trial]
    elif a.hp_json is not None:
        hp = json.loads(a.hp_json.read_text())["hp"]
    run = config.resolve_run(cfg, a.task, a.optimizer, a.seed, a.set, hp_override=hp, source=a.experiment)
    checkpoint_on_sigterm()
    try:
        rec = train(run, a.out, data_root=a.data_root, mirror=a.mirror, quiet=a.quiet, stop_after=a.stop_after)
    except Preempted as exc:
        print(exc, file=sys.stderr)
        return 128 + signal.SIGTERM  # the shell's status for "ended by SIGTERM": the job is not finished
    if rec is None:
        print(f"{a.out}: stopped after {a.stop_after} steps (checkpointed); rerun to continue")
        return 0
    status = "DIVERGED at step %s" % rec["diverged_step"] if rec["diverged"] else f"final_test {rec['final_test']:.4g}"
    print(f"{a.out}: {rec['metric']} {status} ({rec['steps']} steps, {rec['wall_time_s']:.1f} s)")
    return 0


def _select(argv: list[str]) -> int:
    from optirep import config, tuning
    from optirep.train import atomic_write_json

    p = argparse.ArgumentParser(prog="optirep select", description="Pick the best tuning trial on validation.")
    p.add_argument("--experiment", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--trials", nargs="+", required=True, type=Path, help="trial run directories")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    cfg = config.load_experiment(a.experiment)
    chosen = tuning.select(a.trials, cfg["tuning"]["select_on"])
    chosen.update(task=a.task, label=a.optimizer, budget=len(a.trials))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, chosen)
    print(f"{a.out}: {chosen['select_on']}={chosen['value']:.4g} with {chosen['hp']}")
    return 0


def _derive_hp(argv: list[str]) -> int:
    """Effective-LR control: lr = source lr x the product of diagnostics, averaged over the run and its seeds."""
    import math

    from optirep import config
    from optirep.train import atomic_write_json

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
        m = json.loads((d / "metrics.json").read_text())
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        per_row = []
        for r in rows:  # each row's diagnostics are means over its eval interval
            missing = [k for k in spec["keys"] if k not in r.get("diag", {})]
            if missing:
                raise KeyError(f"{d}/metrics.jsonl step {r['step']}: diagnostics lack {missing} "
                               f"(have: {', '.join(sorted(r.get('diag', {})))})")
            per_row.append(math.prod(r["diag"][k] for k in spec["keys"]))
        if not per_row:
            raise KeyError(f"{d}/metrics.jsonl has no logged diagnostics")
        gains.append(sum(per_row) / len(per_row))
        lrs.append(m["hp"]["lr"])
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
    "select": _select,
    "derive-hp": _derive_hp,
    "optimizers": _optimizers,
    "validate": _validate,
    "fetch": _delegate("optirep.data.fetch"),
    "analyze": _delegate("optirep.analysis.run"),
    "aggregate": _delegate("optirep.report.aggregate"),
    "claims": _delegate("optirep.report.claims"),
    "readme": _delegate("optirep.report.readme"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"optirep: unknown command {cmd!r} (allowed: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    from optirep.config import ConfigError

    try:
        return COMMANDS[cmd](rest)
    except (ConfigError, FileNotFoundError, KeyError) as exc:
        print(f"optirep {cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
