# Helpers shared by the rules: experiment files -> the job grid.
import json
import os
import shlex
import sys
from pathlib import Path

from optirep import config as optirep_config
from optirep import timing as optirep_timing
from optirep import tuning as optirep_tuning
from optirep.data.sources import SOURCES

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
    k=r"-?\d+",
    j=r"\d+",
    r=r"\d+",
    spec=optirep_config.SPEC_PATTERN,


def exp_file(w):
    return EXPS[w.exp]["_file"]


def opt_cfg(w):
    return EXPS[w.exp]["optimizers"][w.label]


def spec(exp, task, label):
    """The config level of the results tree (optirep.config.spec_hash; docs/DESIGN.md "Results tree")."""
    return optirep_config.spec_hash(EXPS[exp], task, label)


def current_spec(w):
    """A job's {spec} must be the current config's: an old one is kept on disk, never rebuilt from another config."""
    want = spec(w.exp, w.task, w.label)
    if w.spec != want:
        raise ValueError(f"results/{w.exp}/.../{w.task}/{w.label}/{w.spec}: not the current config of "
                         f"{w.label} on {w.task} in {exp_file(w)} (that is {want}); old results stay as they are")
    return want


def run_dirs(exp, task, label):
    return [f"results/{exp}/runs/{task}/{label}/{spec(exp, task, label)}/seed{s}" for s in EXPS[exp]["seeds"]]


def hp_input(w):
    """The hyperparameter file a final run depends on: tuning selection or effective-LR control."""
    o = opt_cfg(w)
    s = current_spec(w)
    if o.get("tune"):  # the tuning tree shares the label's {spec} (optirep.config.run_spec)
        return f"results/{w.exp}/tune/{w.task}/{w.label}/{s}/selected.json"
    if o.get("lr_from"):
        return f"results/{w.exp}/derived/{w.task}/{w.label}/{s}/hp.json"
    return []


def fetched_for_current(w):
    """The datasets a job needs, once its {spec} is checked (current_spec)."""
    current_spec(w)
    return fetched(w)


def source_runs(w):
    """The final runs of the label an effective-LR control takes its lr from (lr_from)."""
    current_spec(w)
    return [f"{d}/metrics.json" for d in run_dirs(w.exp, w.task, opt_cfg(w)["lr_from"]["label"])]


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


def selections(exp):
    """selected.json of every tuned label (its trials are decided by the bracket checkpoint)."""
    e = EXPS[exp]
    return [
        f"results/{exp}/tune/{t}/{label}/{spec(exp, t, label)}/selected.json"
        for t, task in e["tasks"].items()
        for label in task["optimizers"]
        if e["optimizers"][label].get("tune")
    ]


# --configfile merges into experiments/workflow.yaml, so `timing` may also hold the full study's entries:
# only this study's experiments count (tests/test_timing.py checks every workflow file's own entries).
TIMING = {e: tasks for e, tasks in config.get("timing", {}).items() if e in EXPS}
for _exp, _tasks in TIMING.items():
    for _task, _spec in _tasks.items():
        if _task not in EXPS[_exp]["tasks"]:
            raise ValueError(f"workflow config timing.{_exp}.{_task}: no task {_task!r} in {_exp} "
                             f"(allowed: {', '.join(EXPS[_exp]['tasks'])})")
        # an entry is a label of the task or a variant label[key=value,...] (optirep.config.check_variant:
        # the label must be the task's, each key a hyperparameter its optimizer class takes)
        try:
            optirep_timing.check_entries(EXPS[_exp], _task, _spec["optimizers"],
                                         f"workflow config timing.{_exp}.{_task}.optimizers")
        except optirep_config.ConfigError as _exc:
            raise ValueError(str(_exc)) from None


def timings(exp):
    """The timing stage's records of one experiment (its tasks under the workflow config's `timing:`)."""
    return [f"results/{exp}/timing/{t}.json" for t in TIMING.get(exp, {})]


def timing_args(w):
    spec = TIMING[w.exp][w.task]
    # variants hold [ ] (a shell glob) and may hold spaces: each entry is quoted
    return (f"--optimizers {' '.join(map(shlex.quote, spec['optimizers']))} --repeats {spec.get('repeats', 30)}"
            f" --warmup {spec.get('warmup', 5)}")


def all_targets():
    targets = [f"results/{STUDY}/claims.json"]
    for exp in EXPS:
        targets += aggregates(exp) + timings(exp)
        # Every run the aggregates cite is a target too: Snakemake does not rebuild a deleted
        # intermediate file whose consumers are up to date (snakemake/snakemake#1978), so a run
        # directory deleted after aggregation would otherwise stay cited by aggregate and claims.
        targets += final_metrics(exp) + selections(exp)
        targets += [a for t in EXPS[exp]["tasks"] for a in analyses(exp, t)]
    if config.get("latex", True):
        targets.append(f"{PAPER_DIR}/ms.pdf")
    else:
        targets.append(f"{PAPER_DIR}/generated/numbers.tex")
    if config.get("readme"):
        targets.append(f"results/{STUDY}/readme.stamp")
    return targets


def task_sources(exp, task):
    """The fetchable sources one task reads: its dataset and the tokenizer it names in `data_args`
    (by default the dataset's own, e.g. GPT-2 BPE for tiny-shakespeare). Embedded datasets, a
    character tokenizer or a vocabulary file need nothing fetched."""
    t = EXPS[exp]["tasks"][task]
    if t["dataset"] not in SOURCES:
        return []
    tok = t.get("data_args", {}).get("tokenizer")
    deps = SOURCES[t["dataset"]].requires if tok is None else [tok] if tok in SOURCES else []
    return [t["dataset"], *deps]


def fetched(w):
    """A training job waits only for its own task's datasets among those the config fetches, so a
    dataset that cannot be fetched (VOC not staged) blocks only the tasks that read it."""
    return [f"results/data/{d}.fetched" for d in task_sources(w.exp, w.task) if d in config.get("fetch", [])]


def gradcam_tasks(exp):
    e = EXPS[exp]
    return [t for t, task in e["tasks"].items() if task["model"] == "resnet18"]


# Tuning (rules/tune.smk): the LR sweep's points and its bracketing rounds.
def tune_dir(w):
    """`results/<exp>/tune/<task>/<label>/<spec>` of a tuning job, once its {spec} is checked (current_spec)."""
    return f"results/{w.exp}/tune/{w.task}/{w.label}/{current_spec(w)}"


def initial_points(w):
    o, t = opt_cfg(w), EXPS[w.exp]["tuning"]
    return list(range(len(optirep_tuning.lr_grid(o, t["lr_sweep"]["per_decade"]))))


def round_record(w, r):
    """Round r's record (Snakemake schedules the round first when it does not exist yet)."""
    f = checkpoints.bracket.get(exp=w.exp, task=w.task, label=w.label, spec=current_spec(w), r=r).output[0]
    return f, json.loads(Path(f).read_text())


def bracket_inputs(w):
    r = int(w.r)
    if r == 0:
        ks, prev = initial_points(w), []
    else:
        f, rec = round_record(w, r - 1)
        if rec["status"] != "extend":
            raise ValueError(f"{f}: the sweep stopped there ({rec['status']}); round {r} is not needed")
        ks, prev = [p["k"] for p in rec["points"]] + rec["next"], [f]
    match = (opt_cfg(w).get("gain") or {}).get("match")
    return {
        "previous": prev,
        "points": [f"{tune_dir(w)}/lr/k{k}/trial.json" for k in sorted(ks)],
        "match": [f"results/{w.exp}/tune/{w.task}/{match}/{spec(w.exp, w.task, match)}/sweep.json"] if match else [],
    }


def final_round(w):
    r = 0
    while True:
        f, rec = round_record(w, r)
        if rec["status"] != "extend":
            return f
        r += 1
