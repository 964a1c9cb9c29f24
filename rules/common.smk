# Helpers shared by the rules: experiment files -> the job grid.
import json
import os
import shlex
import sys
from pathlib import Path

from optirep import config as optirep_config

STUDY = config["study"]
EXP_FILES = config["experiments"] if isinstance(config["experiments"], list) else [config["experiments"]]
EXPS = {}
for _f in EXP_FILES:
    _cfg = optirep_config.load_experiment(_f)
    EXPS[_cfg["name"]] = dict(_cfg, _file=_f)
PAPER_DIR = config.get("paper_dir", f"results/{STUDY}/paper")


def cli_args(flags):
    """Workflow config keys as command-line options, values shell-quoted (a mirror path may have spaces)."""
    return " ".join(f"{flag} {shlex.quote(str(config[k]))}" for k, flag in flags.items() if config.get(k))


DATA_ARGS = cli_args({"data_root": "--data-root", "mirror": "--mirror"})  # optirep train, analysis/gradcam.py
FETCH_ARGS = cli_args({"data_root": "--root", "mirror": "--mirror"})  # optirep fetch


wildcard_constraints:
    exp="[a-z0-9_]+",
    task="[a-z0-9_]+",
    label="[a-z0-9_]+",
    seed=r"\d+",
    k=r"\d+",


def exp_file(w):
    return EXPS[w.exp]["_file"]


def opt_cfg(w):
    return EXPS[w.exp]["optimizers"][w.label]


def run_dirs(exp, task, label):
    return [f"results/{exp}/runs/{task}/{label}/seed{s}" for s in EXPS[exp]["seeds"]]


def hp_input(w):
    """The hyperparameter file a final run depends on: tuning selection or effective-LR control."""
    o = opt_cfg(w)
    if o.get("tune"):
        return f"results/{w.exp}/tune/{w.task}/{w.label}/selected.json"
    if o.get("lr_from"):
        return f"results/{w.exp}/derived/{w.task}/{w.label}/hp.json"
    return []


def final_metrics(exp, task=None):
    e = EXPS[exp]
    tasks = [task] if task else list(e["tasks"])
    return [
        f"{d}/metrics.json"
        for t in tasks
        for label in e["tasks"][t]["optimizers"]
        for d in run_dirs(exp, t, label)
    ]


def analyses(exp, task):
    e = EXPS[exp]
    return [
        f"results/{exp}/analysis/{task}/{label}/seed{s}.json"
        for label in e["tasks"][task]["optimizers"]
        for s in e["seeds"]
    ]


def aggregates(exp):
    return [f"results/{exp}/aggregate/{t}.json" for t in EXPS[exp]["tasks"]]


def trial_metrics(exp):
    e = EXPS[exp]
    return [
        f"results/{exp}/tune/{t}/{label}/trial{k}/metrics.json"
        for t, task in e["tasks"].items()
        for label in task["optimizers"]
        if e["optimizers"][label].get("tune")
        for k in range(e["tuning"]["trials"])
    ]


def all_targets():
    targets = [f"results/{STUDY}/claims.json"]
    for exp in EXPS:
        targets += aggregates(exp)
        # Every run the aggregates cite is a target too: Snakemake does not rebuild a deleted
        # intermediate file whose consumers are up to date (snakemake/snakemake#1978), so a run
        # directory deleted after aggregation would otherwise stay cited by aggregate and claims.
        targets += final_metrics(exp) + trial_metrics(exp)
        targets += [a for t in EXPS[exp]["tasks"] for a in analyses(exp, t)]
    if config.get("latex", True):
        targets.append(f"{PAPER_DIR}/ms.pdf")
    else:
        targets.append(f"{PAPER_DIR}/generated/numbers.tex")
    if config.get("readme"):
        targets.append(f"results/{STUDY}/readme.stamp")
    return targets


def fetched(w=None):
    return [f"results/data/{d}.fetched" for d in config.get("fetch", [])]


def gradcam_tasks(exp):
    e = EXPS[exp]
    return [t for t, task in e["tasks"].items() if task["model"] == "resnet18"]
